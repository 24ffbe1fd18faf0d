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

/// The plan's first destructive step was allowed: one more attempt, and the
/// cooldown starts now. The last 16 attempts are kept.
pub(super) fn note_attempt(st: &mut RemediationState, now: Timestamp, cooldown: Duration) {
    st.attempts.push(now);
    let keep = 16;
    if st.attempts.len() > keep {
        let cut = st.attempts.len() - keep;
        st.attempts.drain(..cut);
    }
    st.cooldown_until = Some(now.add_nanos(i64::try_from(cooldown.as_nanos()).unwrap_or(i64::MAX)));
}

/// A step succeeded: the run moves to step `next`, the intent is spent, and
/// what the step took over (cordon, taint, drain), its verification start
/// and its page are recorded.
pub(super) fn step_done(st: &mut RemediationState, done: Done, kind: StepKind, next: usize) {
    st.step = u32::try_from(next).unwrap_or(u32::MAX);
    st.intent = None;
    if let Some(v) = done.k8s_cordon {
        st.owned.k8s_cordon = v;
    }
    if let Some(v) = done.k8s_taint {
        st.owned.k8s_taint = v;
    }
    if let Some(v) = done.slurm_drain {
        st.owned.slurm_drain = v;
    }
    if let Some(t) = done.verify_since {
        st.verify_since = Some(t);
    }
    if kind == StepKind::Verify {
        st.phase = Phase::InProgress;
    }
    if let Some(p) = done.page {
        if !st.open_pages.iter().any(|o| o.dedup_key == p.dedup_key) {
            st.open_pages.push(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_unix_millis(1_800_000_000_000 + s * 1000)
    }

    #[test]
    fn attempts_are_bounded_and_start_the_cooldown() {
        let mut st = RemediationState::healthy(Target::node("n1"), t(0));
        for i in 0..20 {
            note_attempt(&mut st, t(i), Duration::from_secs(1800));
        }
        assert_eq!(st.attempts.len(), 16);
        assert_eq!(st.attempts[0], t(4));
        assert_eq!(st.cooldown_until, Some(t(19 + 1800)));
    }

    #[test]
    fn a_done_step_records_what_pitcrew_took_over_and_spends_the_intent() {
        let mut st = RemediationState::healthy(Target::node("n1"), t(0));
        st.intent = Some(Intent {
            step: "power_cycle".into(),
            action: "act-1".into(),
            written_at: t(1),
        });
        let done = Done {
            k8s_cordon: Some(true),
            verify_since: Some(t(5)),
            ..Done::default()
        };
        step_done(&mut st, done, StepKind::PowerCycle, 3);
        assert_eq!(st.step, 3);
        assert!(st.intent.is_none());
        assert!(st.owned.k8s_cordon && !st.owned.slurm_drain);
        assert_eq!(st.verify_since, Some(t(5)));
        // An operator's own drain stays theirs: only what the step says.
        let done = Done {
            slurm_drain: Some(false),
            ..Done::default()
        };
        step_done(&mut st, done, StepKind::Drain, 4);
        assert!(st.owned.k8s_cordon && !st.owned.slurm_drain);
    }
}
