//! Secrets: BMC passwords, webhook URLs and keys, SASL passwords, tokens.

use std::fmt;
use std::path::Path;

/// A secret value. `Debug` and `Display` print `***`; only
/// [`Secret::expose`] gives the value, at the one place that sends it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

/// A secret that could not be read. Names the secret and where it was
/// looked for, never the value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{name}: {reason}")]
pub struct SecretError {
    pub name: String,
    pub reason: String,
}

impl SecretError {
    /// A missing file or variable is fixed by a person.
    pub fn is_retryable(&self) -> bool {
        false
    }
}

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Reads `path`, without the surrounding whitespace an editor or
    /// `echo` leaves.
    pub fn from_file(name: &str, path: &Path) -> Result<Secret, SecretError> {
        std::fs::read_to_string(path)
            .map(|s| Secret(s.trim().to_owned()))
            .map_err(|e| SecretError {
                name: name.to_owned(),
                reason: format!("cannot read {}: {}", path.display(), e.kind()),
            })
    }

    /// Reads the environment variable `var`, without surrounding
    /// whitespace.
    pub fn from_env(name: &str, var: &str) -> Result<Secret, SecretError> {
        std::env::var(var)
            .map(|s| Secret(s.trim().to_owned()))
            .map_err(|_| SecretError {
                name: name.to_owned(),
                reason: format!("environment variable {var} is not set"),
            })
    }

    /// Reads `file`, or failing that the variable `env`; one of them must
    /// be given.
    pub fn load(name: &str, file: Option<&Path>, env: Option<&str>) -> Result<Secret, SecretError> {
        match (file, env) {
            (Some(f), _) => Secret::from_file(name, f),
            (None, Some(v)) => Secret::from_env(name, v),
            (None, None) => Err(SecretError {
                name: name.to_owned(),
                reason: "give a file or an environment variable".to_owned(),
            }),
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_secret_never_prints() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "*** Secret(***)");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn a_file_secret_loses_its_newline_and_errors_name_the_secret_only() {
        let dir = std::env::temp_dir().join(format!("pitcrew-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("pw");
        std::fs::write(&f, "s3cret\n").unwrap();
        assert_eq!(
            Secret::load("bmc", Some(&f), None).unwrap().expose(),
            "s3cret"
        );
        let e = Secret::load("bmc", Some(&dir.join("missing")), None).unwrap_err();
        assert!(e.to_string().starts_with("bmc: cannot read"), "{e}");
        let e = Secret::load("bmc", None, Some("PITCREW_TEST_SURELY_UNSET_VAR")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "bmc: environment variable PITCREW_TEST_SURELY_UNSET_VAR is not set"
        );
        assert!(Secret::load("bmc", None, None).is_err());
    }
}
