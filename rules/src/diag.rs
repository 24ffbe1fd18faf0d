//! Diagnostics that point at `file:line:column`.

use std::fmt;
use std::ops::Range;

/// Error or warning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error,
    Warning,
}

/// One finding of the compiler, with where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    pub level: Level,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.level {
            Level::Error => "error",
            Level::Warning => "warning",
        };
        write!(
            f,
            "{}:{}:{}: {level}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

/// Turns byte offsets of one file into line and column.
#[derive(Debug)]
pub(crate) struct SourceMap<'a> {
    name: &'a str,
    text: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> SourceMap<'a> {
    pub(crate) fn new(name: &'a str, text: &'a str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        SourceMap {
            name,
            text,
            line_starts,
        }
    }

    pub(crate) fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = match self.line_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i - 1,
        };
        let start = self.line_starts[line];
        let col = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count());
        (line + 1, col + 1)
    }

    pub(crate) fn diag(&self, span: &Range<usize>, level: Level, message: String) -> Diagnostic {
        let (line, column) = self.position(span.start);
        Diagnostic {
            file: self.name.to_owned(),
            line,
            column,
            level,
            message,
        }
    }
}

/// Diagnostics collected while compiling.
#[derive(Debug, Default)]
pub(crate) struct Diags {
    pub(crate) list: Vec<Diagnostic>,
}

impl Diags {
    pub(crate) fn has_errors(&self) -> bool {
        self.list.iter().any(|d| d.level == Level::Error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_count_characters() {
        let m = SourceMap::new("f.toml", "ab\né = 1\n\nx");
        assert_eq!(m.position(0), (1, 1));
        assert_eq!(m.position(3), (2, 1));
        assert_eq!(m.position(6), (2, 3)); // after the two-byte é and a space
        assert_eq!(m.position(11), (4, 1));
        assert_eq!(m.position(999), (4, 2));
    }
}
