//! Collectors: the sources of `pitcrew collect`, one module per source.
//!
//! Not built yet (issue #3). Contract for what lands here: every source
//! turns what it reads into [`pitcrew_contract::Event`]s and knows nothing
//! about Kafka; the binary wires sources to the bus.
