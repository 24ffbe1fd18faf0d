//! The plans an incident can ask for. Remediation (issue #5) defines their
//! steps; the rule compiler only needs their names to refuse a typo before
//! it reaches production. A rule set can declare more with
//! `[[plan]] name = "..."` when the remediation config defines them.

/// Built-in plans and what each does, for `pitcrew check` and the docs.
pub const BUILTIN_PLANS: &[(&str, &str)] = &[
    ("notify", "page or message a team or a job's owner; touch nothing"),
    ("restart_app", "requeue the hit job; leave the node in service"),
    ("reset_gpu", "drain the GPU's jobs and reset the GPU (params: when = now | job_boundary)"),
    ("reboot_node", "requeue jobs, cordon and drain, power cycle through the BMC, verify, return to service"),
    ("drain_node", "requeue jobs, cordon and drain, keep out of service (params: diagnostics, at = now | checkpoint)"),
    ("rma", "drain, keep out of service and open a hardware ticket"),
    ("page", "page on-call (params: team); no change to any node"),
];

pub(crate) fn is_builtin(name: &str) -> bool {
    BUILTIN_PLANS.iter().any(|(n, _)| *n == name)
}
