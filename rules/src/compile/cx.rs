//! Walking the spanned TOML tree: tables, allowed keys, strings, durations,
//! numbers and booleans, each problem reported where it is.

use super::*;

impl<'a, 'm> Cx<'a, 'm> {
    pub(crate) fn new(
        map: &'a SourceMap<'m>,
        diags: &'a mut Diags,
        labels: &'a mut Vec<String>,
    ) -> Cx<'a, 'm> {
        Cx { map, diags, labels }
    }

    pub(crate) fn err(&mut self, span: &Range<usize>, msg: String) {
        self.diags.list.push(self.map.diag(span, Level::Error, msg));
    }

    pub(super) fn pos(&self, span: &Range<usize>) -> Pos {
        let d = self.map.diag(span, Level::Error, String::new());
        Pos {
            file: d.file,
            line: d.line,
            column: d.column,
        }
    }

    /// The tables of an array of tables (`[[rule]]`).
    pub(crate) fn tables<'v, 'i>(
        &mut self,
        v: &'v Val<'i>,
        what: &str,
    ) -> Vec<(&'v Table<'i>, Range<usize>)> {
        match v.get_ref() {
            DeValue::Array(items) => items
                .iter()
                .filter_map(|it| match it.get_ref() {
                    DeValue::Table(t) => Some((t, it.span())),
                    _ => {
                        self.err(&it.span(), format!("each [[{what}]] must be a table"));
                        None
                    }
                })
                .collect(),
            _ => {
                self.err(
                    &v.span(),
                    format!("`{what}` must be an array of tables: write [[{what}]]"),
                );
                Vec::new()
            }
        }
    }

    /// Reports keys outside `allowed`.
    pub(crate) fn keys(&mut self, t: (&Table<'_>, Range<usize>), allowed: &[&str], what: &str) {
        for (k, _) in t.0.iter() {
            let name = k.get_ref().as_ref();
            if !allowed.contains(&name) {
                let hint = suggest(name, allowed.iter().copied());
                self.err(
                    &k.span(),
                    format!(
                        "unknown key `{name}` in {what}{hint}; expected one of: {}",
                        allowed.join(", ")
                    ),
                );
            }
        }
    }

    pub(crate) fn get<'v, 'i>(
        &self,
        t: (&'v Table<'i>, Range<usize>),
        key: &str,
    ) -> Option<&'v Val<'i>> {
        t.0.iter().find(|(k, _)| k.get_ref() == key).map(|(_, v)| v)
    }

    pub(crate) fn opt_str(
        &mut self,
        t: (&Table<'_>, Range<usize>),
        key: &str,
    ) -> Option<(String, Range<usize>)> {
        let v = self.get(t, key)?;
        match v.get_ref().as_str() {
            Some(s) => Some((s.to_owned(), v.span())),
            None => {
                self.err(
                    &v.span(),
                    format!("`{key}` must be a string, not {}", v.get_ref().type_str()),
                );
                None
            }
        }
    }

    pub(crate) fn req_str(
        &mut self,
        t: (&Table<'_>, Range<usize>),
        key: &str,
        at: &Range<usize>,
        what: &str,
    ) -> Option<(String, Range<usize>)> {
        if self.get(t.clone(), key).is_none() {
            self.err(&t.1.clone().min_start(at), format!("{what} needs `{key}`"));
            return None;
        }
        self.opt_str(t, key)
    }

    pub(crate) fn opt_span(
        &mut self,
        t: (&Table<'_>, Range<usize>),
        key: &str,
    ) -> Option<(Span, Range<usize>)> {
        let v = self.get(t, key)?;
        let Some(s) = v.get_ref().as_str() else {
            self.err(
                &v.span(),
                format!("`{key}` must be a duration string like \"30s\", \"5m\" or \"7d\""),
            );
            return None;
        };
        match Span::parse(s) {
            Ok(d) => Some((d, v.span())),
            Err(m) => {
                self.err(&v.span(), m);
                None
            }
        }
    }

    pub(crate) fn opt_num(
        &mut self,
        t: (&Table<'_>, Range<usize>),
        key: &str,
    ) -> Option<(f64, Range<usize>)> {
        let v = self.get(t, key)?;
        match num_of(v.get_ref()) {
            Some(n) => Some((n, v.span())),
            None => {
                self.err(&v.span(), format!("`{key}` must be a number"));
                None
            }
        }
    }

    /// A required whole number in `lo..=hi`.
    pub(super) fn whole(
        &mut self,
        t: (&Table<'_>, Range<usize>),
        key: &str,
        lo: u32,
        hi: u32,
        missing: &str,
    ) -> Option<u32> {
        match self.opt_num(t.clone(), key) {
            Some((n, _)) if n >= f64::from(lo) && n.fract() == 0.0 && n <= f64::from(hi) => {
                Some(n as u32)
            }
            Some((_, span)) => {
                self.err(
                    &span,
                    format!("`{key}` must be a whole number from {lo} to {hi}"),
                );
                None
            }
            None => {
                if self.get(t.clone(), key).is_none() {
                    self.err(&t.1, missing.to_owned());
                }
                None
            }
        }
    }

    pub(crate) fn opt_bool(&mut self, t: (&Table<'_>, Range<usize>), key: &str) -> Option<bool> {
        let v = self.get(t, key)?;
        match v.get_ref().as_bool() {
            Some(b) => Some(b),
            None => {
                self.err(&v.span(), format!("`{key}` must be true or false"));
                None
            }
        }
    }

    pub(crate) fn opt_table<'v, 'i>(
        &mut self,
        t: (&'v Table<'i>, Range<usize>),
        key: &str,
    ) -> Option<(&'v Table<'i>, Range<usize>)> {
        let v = self.get(t, key)?;
        match v.get_ref().as_table() {
            Some(tt) => Some((tt, v.span())),
            None => {
                self.err(&v.span(), format!("`{key}` must be a table"));
                None
            }
        }
    }

    pub(super) fn label_index(&mut self, name: &str) -> u16 {
        match self.labels.iter().position(|l| l == name) {
            Some(i) => i as u16,
            None => {
                self.labels.push(name.to_owned());
                (self.labels.len() - 1) as u16
            }
        }
    }
}
