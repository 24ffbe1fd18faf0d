//! pitcrew's own observability, shared by every stage.
//!
//! - [`metrics!`]: a stage's metrics declared once (field, type, name, unit,
//!   help), generating the struct, its `Default` and its `register`. Names
//!   follow `pitcrew_<stage>_<what>_<unit>`; prometheus-client adds
//!   `_total` to counters and the unit suffix.
//! - [`InternalEvent`]: something a stage did that deserves both a log line
//!   and a count. One typed event emits both (Vector's `internal_events`
//!   pattern), so the two cannot drift apart or be forgotten one without the
//!   other; the metrics struct's generated `emit` takes it.
//! - Shared bounded label sets ([`OutcomeLabel`], [`StageLabel`]).

pub use prometheus_client;

use prometheus_client::encoding::EncodeLabelSet;

/// An outcome label (`ok`, `error`, `committed`, `aborted`...): from a
/// fixed set chosen by the code, never from input.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

impl OutcomeLabel {
    pub fn new(outcome: &str) -> OutcomeLabel {
        OutcomeLabel {
            outcome: outcome.to_owned(),
        }
    }
}

/// Which stage of a service (`node`, `group`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabel {
    pub stage: String,
}

impl StageLabel {
    pub fn new(stage: &str) -> StageLabel {
        StageLabel {
            stage: stage.to_owned(),
        }
    }
}

/// Something a stage did that is worth a log line and a count: `emit`
/// writes the one and moves the other.
pub trait InternalEvent<M: ?Sized> {
    fn emit(self, metrics: &M);
}

/// Declares a stage's metrics once:
///
/// ```
/// use pitcrew_observe::prometheus_client::metrics::{counter::Counter, histogram::Histogram};
/// pitcrew_observe::metrics! {
///     /// The example stage's metrics.
///     pub struct ExampleMetrics in "pitcrew_example" {
///         /// Events read.
///         events: Counter => "events", "Events read";
///         eval: Histogram = Histogram::new([0.001, 0.01]) => "evaluation" [Seconds], "Time per event";
///     }
/// }
/// let m = ExampleMetrics::default();
/// let mut registry = pitcrew_observe::prometheus_client::registry::Registry::default();
/// m.register(&mut registry);
/// m.events.inc();
/// let mut text = String::new();
/// pitcrew_observe::prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
/// assert!(text.contains("pitcrew_example_events_total 1"));
/// assert!(text.contains("pitcrew_example_evaluation_seconds_bucket"));
/// ```
///
/// A field `= expr` is built by `expr` (histogram buckets), otherwise by
/// `Default`; `[Seconds]` (any `Unit`) registers with a unit. Fields after
/// `+` (`+ /// doc` then `field: Type;`) are nested metric sets with their
/// own `register` and prefix, registered first.
#[macro_export]
macro_rules! metrics {
    (
        $(#[$smeta:meta])*
        $vis:vis struct $name:ident in $prefix:literal {
            $(
                $(#[$fmeta:meta])*
                $field:ident : $ty:ty $(= $ctor:expr)? => $metric:literal $([$unit:ident])?, $help:literal;
            )*
            $(
                + $(#[$nmeta:meta])* $nfield:ident : $nty:ty;
            )*
        }
    ) => {
        $(#[$smeta])*
        #[derive(Clone, Debug)]
        $vis struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
            $( $(#[$nmeta])* pub $nfield: $nty, )*
        }

        impl ::std::default::Default for $name {
            fn default() -> Self {
                $name {
                    $( $field: $crate::__metric_ctor!($($ctor)?), )*
                    $( $nfield: ::std::default::Default::default(), )*
                }
            }
        }

        impl $name {
            /// Registers every metric under its prefix.
            pub fn register(&self, registry: &mut $crate::prometheus_client::registry::Registry) {
                $( self.$nfield.register(registry); )*
                let r = registry.sub_registry_with_prefix($prefix);
                $( $crate::__metric_register!(r, $metric, $help, self.$field.clone() $(, $unit)?); )*
            }

            /// Emits an internal event: its log line and its counts.
            pub fn emit(&self, event: impl $crate::InternalEvent<Self>) {
                event.emit(self);
            }
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __metric_ctor {
    () => {
        ::std::default::Default::default()
    };
    ($e:expr) => {
        $e
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __metric_register {
    ($r:ident, $metric:literal, $help:literal, $value:expr) => {
        $r.register($metric, $help, $value)
    };
    ($r:ident, $metric:literal, $help:literal, $value:expr, $unit:ident) => {
        $r.register_with_unit(
            $metric,
            $help,
            $crate::prometheus_client::registry::Unit::$unit,
            $value,
        )
    };
}
