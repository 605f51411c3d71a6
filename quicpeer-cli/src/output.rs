//! What the commands print: human lines, or with `--json` one JSON object per line.
//!
//! The JSON is written by hand: every line is a flat object of strings, numbers and booleans,
//! which a dozen lines produce correctly (strings escaped per RFC 8259, non-finite numbers as
//! `null`) without a serialization framework in the dependency tree.

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{Duration, Instant};

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

/// One flat JSON object, built field by field.
#[derive(Debug, Clone)]
pub struct Json(String);

impl Json {
    /// `{"event":"<name>"`, to which fields are added.
    pub fn event(name: &str) -> Self {
        Self(String::from("{")).str("event", name)
    }

    fn key(mut self, key: &str) -> Self {
        if self.0.len() > 1 {
            self.0.push(',');
        }
        escape_into(&mut self.0, key);
        self.0.push(':');
        self
    }

    /// A string field.
    pub fn str(self, key: &str, value: &str) -> Self {
        let mut this = self.key(key);
        escape_into(&mut this.0, value);
        this
    }

    /// A number field, with microsecond precision for milliseconds; `null` if not finite.
    pub fn num(self, key: &str, value: f64) -> Self {
        let mut this = self.key(key);
        if value.is_finite() {
            let _ = write!(this.0, "{}", (value * 1000.0).round() / 1000.0);
        } else {
            this.0.push_str("null");
        }
        this
    }

    /// An integer field.
    pub fn int(self, key: &str, value: u64) -> Self {
        let mut this = self.key(key);
        let _ = write!(this.0, "{value}");
        this
    }

    /// A boolean field.
    pub fn bool(self, key: &str, value: bool) -> Self {
        let mut this = self.key(key);
        this.0.push_str(if value { "true" } else { "false" });
        this
    }

    /// The finished object.
    pub fn finish(mut self) -> String {
        self.0.push('}');
        self.0
    }
}

/// Appends `text` as a JSON string literal.
fn escape_into(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 || c == '\u{7f}' || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
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
