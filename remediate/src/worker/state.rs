//! Pure transitions of a target's [`RemediationState`]: functions of the
//! state, the input and the time, no I/O.

use super::*;

/// Makes `req` the running request of `st`.
pub(super) fn start(
    st: &mut RemediationState,
    req: &ActionRequest,
    handled_cap: usize,
    now: Timestamp,
) {
    st.phase = Phase::InProgress;
    st.action = Some(req.id.clone());
    st.plan = Some(req.plan.clone());
    st.request = Some(req.clone());
    st.step = 0;
    st.intent = None;
    st.verify_since = None;
    st.handled.push(req.id.clone());
    if st.handled.len() > handled_cap {
        let cut = st.handled.len() - handled_cap;
        st.handled.drain(..cut);
    }
    st.updated_at = now;
}
