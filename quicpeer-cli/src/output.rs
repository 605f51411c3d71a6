//! What the commands print: human lines, or with `--json` one JSON object per line.
//!
//! Every JSON line is a flat object of strings, numbers and booleans, its fields in the order
//! they were added, written by serde_json (non-finite numbers as `null`).

use std::io::{self, Write as _};
use std::time::{Duration, Instant};

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::ser::Formatter;
use serde_json::Value;

/// Where a command's lines go, and in which form.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    json: bool,
    start: Instant,
    /// Fields added to every JSON line (e.g. which demo run, which node).
    tags: &'static [(&'static str, &'static str)],
}

// Without the driver, only `id` and `cert` print, and they use a part of this.
impl Output {
    /// Human lines, or JSON lines when `json`; `t_ms` counts from now.
    pub fn new(json: bool) -> Self {
        Self {
            json,
            start: Instant::now(),
            tags: &[],
        }
    }

    /// The same output, adding `tags` to every JSON line.
    pub fn tagged(self, tags: &'static [(&'static str, &'static str)]) -> Self {
        Self { tags, ..self }
    }

    /// Whether JSON lines are printed.
    pub fn is_json(&self) -> bool {
        self.json
    }

    /// Milliseconds since the output was created, at `at`.
    pub fn t_ms(&self, at: Instant) -> f64 {
        ms(at.saturating_duration_since(self.start))
    }

    /// Prints `json` (with `t_ms` for `at` added) or `human`, whichever the mode asks for, and
    /// flushes so that a reader on a pipe sees the line at once.
    pub fn emit(&self, at: Instant, json: Json, human: impl FnOnce() -> String) {
        let line = if self.json {
            let mut json = json;
            for (key, value) in self.tags {
                json = json.str(key, value);
            }
            json.num("t_ms", self.t_ms(at)).finish()
        } else {
            human()
        };
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{line}");
        let _ = stdout.flush();
    }

    /// Prints a JSON line only (nothing in human mode).
    pub fn json(&self, at: Instant, json: Json) {
        if self.json {
            self.emit(at, json, String::new);
        }
    }

    /// Prints a human line only (nothing in JSON mode).
    pub fn human(&self, line: impl FnOnce() -> String) {
        if !self.json {
            let mut stdout = std::io::stdout().lock();
            let _ = writeln!(stdout, "{}", line());
            let _ = stdout.flush();
        }
    }
}

/// A duration in milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// One flat JSON object, built field by field; the fields keep their order.
#[derive(Debug, Clone)]
pub struct Json(Vec<(String, Value)>);

impl Json {
    /// `{"event":"<name>"`, to which fields are added.
    pub fn event(name: &str) -> Self {
        Self(Vec::new()).str("event", name)
    }

    fn field(mut self, key: &str, value: Value) -> Self {
        self.0.push((key.to_owned(), value));
        self
    }

    /// A string field.
    pub fn str(self, key: &str, value: &str) -> Self {
        self.field(key, value.into())
    }

    /// A number field, with microsecond precision for milliseconds; `null` if not finite.
    pub fn num(self, key: &str, value: f64) -> Self {
        self.field(key, ((value * 1000.0).round() / 1000.0).into())
    }

    /// An integer field.
    pub fn int(self, key: &str, value: u64) -> Self {
        self.field(key, value.into())
    }

    /// A boolean field.
    pub fn bool(self, key: &str, value: bool) -> Self {
        self.field(key, value.into())
    }

    /// The finished object, on one line.
    pub fn finish(self) -> String {
        let mut line = Vec::new();
        self.serialize(&mut serde_json::Serializer::with_formatter(&mut line, Line))
            .expect("a flat object of strings, numbers and booleans always serializes");
        String::from_utf8(line).expect("serde_json writes UTF-8")
    }
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in &self.0 {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

/// serde_json's compact form, but for two things the lines have always done: numbers as Rust's
/// `Display` prints them (`3`, not `3.0`; never an exponent), and U+007F, U+2028 and U+2029
/// escaped too (JSON allows them raw; JavaScript before ES2019 did not allow the last two in a
/// string literal).
struct Line;

impl Formatter for Line {
    fn write_f64<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: f64) -> io::Result<()> {
        write!(writer, "{value}")
    }

    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut rest = fragment;
        while let Some((at, c)) = rest
            .char_indices()
            .find(|(_, c)| matches!(c, '\u{7f}' | '\u{2028}' | '\u{2029}'))
        {
            writer.write_all(&rest.as_bytes()[..at])?;
            write!(writer, "\\u{:04x}", u32::from(c))?;
            rest = &rest[at + c.len_utf8()..];
        }
        writer.write_all(rest.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::Json;

    #[test]
    fn objects() {
        let line = Json::event("ping")
            .num("rtt_ms", 0.2345678)
            .int("seq", 3)
            .bool("ok", true)
            .num("bad", f64::NAN)
            .finish();
        assert_eq!(
            line,
            r#"{"event":"ping","rtt_ms":0.235,"seq":3,"ok":true,"bad":null}"#
        );
        assert_eq!(
            Json::event("x").num("n", 3.0).finish(),
            r#"{"event":"x","n":3}"#
        );
    }

    #[test]
    fn strings_are_escaped() {
        let line = Json::event("e")
            .str("k\"", "a\"b\\c\nd\te\u{1}f\u{7f}g\u{2028}é")
            .finish();
        assert_eq!(
            line,
            r#"{"event":"e","k\"":"a\"b\\c\nd\te\u0001f\u007fg\u2028é"}"#
        );
    }
}
