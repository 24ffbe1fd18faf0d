//! Predicates: `when` matchers and `where` clauses over an event's
//! readable fields.

use super::*;

pub(super) fn gpu_index(e: &Event) -> Option<u32> {
    e.gpu.as_ref().and_then(|g| g.index)
}

/// A job's id: the job events' own field, else the `job` label.
pub(crate) fn job_of(e: &Event) -> Option<&str> {
    match &e.data {
        EventData::JobStarted(j) => Some(&j.job),
        EventData::JobFinished(j) => Some(&j.job),
        EventData::JobNcclTimeout(j) => Some(&j.job),
        EventData::JobStep(j) => Some(&j.job),
        _ => e.labels.get("job").map(String::as_str),
    }
}

pub(crate) fn matches(m: &Matcher, event: &Event, labels: &[String]) -> bool {
    m.kinds.contains(event.kind()) && m.preds.iter().all(|p| pred(p, event, labels))
}

pub(super) fn lit_eq(v: &Val<'_>, l: &Lit) -> bool {
    match (v, l) {
        (Val::Num(a), Lit::Num(b)) => a == b,
        (Val::Num(a), Lit::Bool(b)) => *a == f64::from(u8::from(*b)),
        (Val::Str(a), Lit::Str(b)) => a == b,
        (Val::Bool(a), Lit::Bool(b)) => a == b,
        (Val::Strings(_) | Val::Throttle(_), Lit::Str(b)) => v.contains(b),
        _ => false,
    }
}

pub(crate) fn pred(p: &Pred, event: &Event, labels: &[String]) -> bool {
    let v = read(&p.field, event, labels);
    match &p.op {
        Op::Exists(want) => !matches!(v, Val::Missing) == *want,
        _ if matches!(v, Val::Missing) => matches!(p.op, Op::Ne(_) | Op::NotIn(_)),
        Op::Eq(l) => lit_eq(&v, l),
        Op::Ne(l) => !lit_eq(&v, l),
        Op::In(ls) => ls.iter().any(|l| lit_eq(&v, l)),
        Op::NotIn(ls) => !ls.iter().any(|l| lit_eq(&v, l)),
        Op::Gt(n) => v.as_num().is_some_and(|x| x > *n),
        Op::Ge(n) => v.as_num().is_some_and(|x| x >= *n),
        Op::Lt(n) => v.as_num().is_some_and(|x| x < *n),
        Op::Le(n) => v.as_num().is_some_and(|x| x <= *n),
        Op::Contains(s) => v.contains(s),
        Op::Prefix(s) => matches!(v, Val::Str(x) if x.starts_with(s.as_str())),
    }
}
