//! A benchmark's result: a table with notes, printed aligned or as one JSON object.

use std::fmt::Write as _;
use std::time::Duration;

/// One cell of a [`Report`].
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// Text.
    Text(String),
    /// A number, shown with this many decimals in tables (JSON gets it in full).
    Number(f64, usize),
    /// Not measured.
    Missing,
}

impl Cell {
    /// Text.
    pub fn text(text: impl Into<String>) -> Self {
        Self::Text(text.into())
    }

    /// A number with `decimals` decimals.
    pub fn num(value: f64, decimals: usize) -> Self {
        Self::Number(value, decimals)
    }

    /// A duration in milliseconds, with `decimals` decimals; `Missing` for `None`.
    pub fn millis(d: Option<Duration>, decimals: usize) -> Self {
        d.map_or(Self::Missing, |d| Self::Number(d.as_secs_f64() * 1e3, decimals))
    }

    fn display(&self) -> String {
        match self {
            Self::Text(text) => text.clone(),
            Self::Number(value, decimals) => format!("{value:.decimals$}"),
            Self::Missing => "—".into(),
        }
    }

    fn json(&self) -> String {
        match self {
            Self::Text(text) => json_string(text),
            Self::Number(value, _) if value.is_finite() => format!("{value}"),
            Self::Number(..) | Self::Missing => "null".into(),
        }
    }
}

/// The result of one benchmark: a table, and notes on how to read it.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The benchmark's name, as on the command line.
    pub name: String,
    /// Column headers, units included.
    pub columns: Vec<String>,
    /// Rows, as many cells as columns.
    pub rows: Vec<Vec<Cell>>,
    /// Method, parameters, machine load.
    pub notes: Vec<String>,
}

impl Report {
    /// An empty report with these columns.
    pub fn new(name: &str, columns: &[&str]) -> Self {
        Self {
            name: name.into(),
            columns: columns.iter().map(|c| (*c).to_owned()).collect(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// The report as an aligned plain-text table, notes below.
    pub fn table(&self) -> String {
        let cells: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|row| row.iter().map(Cell::display).collect())
            .collect();
        let widths: Vec<usize> = (0..self.columns.len())
            .map(|i| {
                cells
                    .iter()
                    .filter_map(|row| row.get(i))
                    .chain([&self.columns[i]])
                    .map(|c| c.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |row: &[String]| {
            let mut out = String::new();
            for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
                let pad = width.saturating_sub(cell.chars().count());
                if i == 0 {
                    let _ = write!(out, "{cell}{}", " ".repeat(pad));
                } else {
                    let _ = write!(out, "  {}{cell}", " ".repeat(pad));
                }
            }
            out.trim_end().to_owned()
        };
        let mut out = format!("{}\n", line(&self.columns));
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        out += &format!("{}\n", line(&rule));
        for row in &cells {
            out += &format!("{}\n", line(row));
        }
        for note in &self.notes {
            out += &format!("note: {note}\n");
        }
        out
    }

    /// The report as one JSON object: `{"bench", "columns", "rows", "notes"}`.
    pub fn json(&self) -> String {
        let list = |items: Vec<String>| format!("[{}]", items.join(","));
        let columns = list(self.columns.iter().map(|c| json_string(c)).collect());
        let rows = list(
            self.rows
                .iter()
                .map(|row| list(row.iter().map(Cell::json).collect()))
                .collect(),
        );
        let notes = list(self.notes.iter().map(|n| json_string(n)).collect());
        format!(
            "{{\"bench\":{},\"columns\":{columns},\"rows\":{rows},\"notes\":{notes}}}",
            json_string(&self.name)
        )
    }
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}
