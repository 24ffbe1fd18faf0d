//! Node checks before return to service: a site's diagnostic (for example
//! `dcgmi diag -r 2`) run on the node itself, through Slurm
//! ([`super::slurm::SlurmCheck`]) or as a Kubernetes Job pinned to the node
//! ([`super::kube_check::KubeJobCheck`]).
//!
//! Contract: a check reports a verdict (`passed`) with what the check said,
//! already made fit for the audit topic by [`for_the_audit`] (the end of the
//! output, secrets masked). Not being able to run the check at all (the
//! controller away, the API answering 5xx) is an `ExecError`, retryable or
//! not, never a verdict: a node is only returned after a check that ran and
//! passed.

use super::BoxFuture;
use super::ExecError;

/// The node a check runs on, by each system's name for it.
#[derive(Clone, Copy, Debug)]
pub struct CheckNode<'a> {
    /// The inventory's name.
    pub node: &'a str,
    pub k8s: &'a str,
    pub slurm: &'a str,
    /// The action the check belongs to (names the check's own objects).
    pub action: &'a str,
}

/// A check's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckOutcome {
    pub passed: bool,
    /// What the check printed (or, on Kubernetes, its pod's termination
    /// message), fit for the audit: see [`for_the_audit`].
    pub output: String,
}

/// A diagnostic run on the node before it is returned to service.
pub trait NodeCheck: Send + Sync {
    /// Runs the check and waits for its verdict (within its own timeout).
    fn run<'a>(&'a self, node: CheckNode<'a>) -> BoxFuture<'a, Result<CheckOutcome, ExecError>>;
    /// What runs, where: `slurm: dcgmi diag -r 2`.
    fn describe(&self) -> String;
}

/// How much of a check's output reaches the audit.
pub const OUTPUT_MAX: usize = 1500;

/// Words after which a value is a secret.
const SECRET_WORDS: [&str; 8] = [
    "password",
    "passwd",
    "token",
    "secret",
    "apikey",
    "api_key",
    "api-key",
    "authorization",
];

/// A check's output as the audit keeps it: secrets masked (`password=...`,
/// `token: ...`, `Bearer ...`), then the last [`OUTPUT_MAX`] bytes (a
/// diagnostic's verdict comes at its end), on a character boundary.
pub fn for_the_audit(output: &str) -> String {
    let masked: Vec<String> = output.trim().lines().map(mask_line).collect();
    let text = masked.join("\n");
    if text.len() <= OUTPUT_MAX {
        return text;
    }
    let mut start = text.len() - OUTPUT_MAX;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &text[start..])
}

/// Masks the value after a secret word and `=`/`:`, and after `Bearer`.
fn mask_line(line: &str) -> String {
    let lower = line.to_ascii_lowercase();
    let mut out = String::with_capacity(line.len());
    let mut i = 0;
    while i < line.len() {
        let here = &lower[i..];
        let word = SECRET_WORDS
            .iter()
            .find(|w| here.starts_with(**w))
            .map(|w| w.len())
            .or_else(|| here.starts_with("bearer ").then_some(6));
        let Some(len) = word else {
            let c = line[i..].chars().next().unwrap_or(' ');
            out.push(c);
            i += c.len_utf8();
            continue;
        };
        let bearer = here.starts_with("bearer ");
        out.push_str(&line[i..i + len]);
        i += len;
        // The separator: `=`, `:`, quotes and spaces (a Bearer's space).
        let sep_end = line[i..]
            .char_indices()
            .find(|(_, c)| !matches!(c, '=' | ':' | ' ' | '"' | '\''))
            .map_or(line.len(), |(k, _)| i + k);
        let sep = &line[i..sep_end];
        if !bearer && !sep.contains(['=', ':']) {
            continue;
        }
        out.push_str(sep);
        let value_end = line[sep_end..]
            .char_indices()
            .find(|(_, c)| c.is_whitespace() || matches!(c, '"' | '\'' | ',' | ';'))
            .map_or(line.len(), |(k, _)| sep_end + k);
        let value = &line[sep_end..value_end];
        if value.eq_ignore_ascii_case("bearer") {
            // `Authorization: Bearer X`: the scheme stays, the credential goes.
            i = sep_end;
            continue;
        }
        if value_end > sep_end {
            out.push_str("***");
        }
        i = value_end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_in_a_checks_output_are_masked() {
        let out = for_the_audit(
            "connecting with password=hunter2 to bmc\nAuthorization: Bearer abc.def\n\
             TOKEN: \"s3cr3t\" ok\nsecretary of state\nall 8 GPUs pass",
        );
        assert!(!out.contains("hunter2"), "{out}");
        assert!(!out.contains("abc.def"), "{out}");
        assert!(!out.contains("s3cr3t"), "{out}");
        assert!(out.contains("password=*** to bmc"), "{out}");
        assert!(out.contains("TOKEN: \"***\" ok"), "{out}");
        // A secret word without a value after it is just a word.
        assert!(out.contains("secretary of state"), "{out}");
        assert!(out.ends_with("all 8 GPUs pass"), "{out}");
    }

    #[test]
    fn long_output_keeps_its_end() {
        let long = format!("{}\nverdict: FAIL (GPU 3 memory)", "é".repeat(3000));
        let out = for_the_audit(&long);
        assert!(out.len() <= OUTPUT_MAX + "…".len(), "{}", out.len());
        assert!(out.starts_with('…'));
        assert!(out.ends_with("verdict: FAIL (GPU 3 memory)"));
    }
}
