//! Templated summaries: `GPU {gpu} of {node} fell off the bus (Xid {data.code})`.
//!
//! Placeholders are checked when the rule compiles: a field the rule's
//! kinds do not have is a diagnostic, not a `?` at run time.

use crate::field::FieldRef;
use crate::program::Dim;

#[derive(Clone, Debug)]
pub(crate) enum Part {
    Lit(String),
    Field(FieldRef),
    Dim(Dim),
    /// The rule's key as written on the incident (`n17/3`).
    Key,
    Rule,
    /// Events counted into the incident so far.
    Count,
    /// Distinct members of a fan-in group.
    Members,
    /// The aggregate or value that crossed the threshold.
    Value,
}

/// A compiled template.
#[derive(Clone, Debug, Default)]
pub struct Template {
    pub(crate) parts: Vec<Part>,
}

/// A template piece: `Ok(name)` for a placeholder, `Err(text)` for literal
/// text, with its byte offset.
pub(crate) type Piece = (usize, Result<String, String>);

/// Splits a template into literal text and `{name}` placeholders, with the
/// byte offset of each placeholder in the template.
pub(crate) fn split(text: &str) -> Result<Vec<Piece>, (usize, String)> {
    let mut out = Vec::new();
    let mut lit = String::new();
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '{' if chars.peek().map(|p| p.1) == Some('{') => {
                chars.next();
                lit.push('{');
            }
            '}' if chars.peek().map(|p| p.1) == Some('}') => {
                chars.next();
                lit.push('}');
            }
            '{' => {
                if !lit.is_empty() {
                    out.push((i, Err(std::mem::take(&mut lit))));
                }
                let mut name = String::new();
                let mut closed = false;
                for (_, c) in chars.by_ref() {
                    if c == '}' {
                        closed = true;
                        break;
                    }
                    name.push(c);
                }
                if !closed {
                    return Err((
                        i,
                        "unclosed `{` in template (write `{{` for a brace)".into(),
                    ));
                }
                out.push((i, Ok(name.trim().to_owned())));
            }
            '}' => return Err((i, "stray `}` in template (write `}}` for a brace)".into())),
            c => lit.push(c),
        }
    }
    if !lit.is_empty() {
        out.push((text.len(), Err(lit)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_placeholders_and_escapes() {
        let parts = split("GPU {gpu} of {node} {{x}}").unwrap_or_default();
        let names: Vec<_> = parts
            .iter()
            .map(|(_, p)| match p {
                Ok(n) => format!("<{n}>"),
                Err(l) => l.clone(),
            })
            .collect();
        assert_eq!(names, ["GPU ", "<gpu>", " of ", "<node>", " {x}"]);
        assert!(split("oops {node").is_err());
        assert!(split("oops }").is_err());
    }
}
