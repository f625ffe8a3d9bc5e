//! The one table `make bench` ends with. Each benchmark prints its own
//! detailed tables as it goes and also appends its headline figures, one
//! JSON line per figure, to the file `BENCH_TABLE` names (scripts/bench.sh
//! sets it). `bench_table::print_the_table`, run last, reads them back and
//! prints them as one Markdown table: the one README shows. Every row says
//! what its figure reads, so a constant-cost synthetic query is never taken
//! for a real one.

use std::io::Write;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
pub struct Row {
    /// Which benchmark: "SLO evaluation", "abort reaction", ...
    pub part: String,
    /// The size or variant: "10,000 SLOs, recording rules".
    pub size: String,
    /// What is measured, with its unit.
    pub figure: String,
    pub value: String,
    /// What the figure reads (queries, data) or how it is taken.
    pub reads: String,
}

/// Appends one row when `BENCH_TABLE` is set; a benchmark run by hand
/// without it prints its own tables only.
pub fn record(part: &str, size: &str, figure: &str, value: String, reads: &str) -> Result<()> {
    let Ok(path) = std::env::var("BENCH_TABLE") else {
        return Ok(());
    };
    let row = Row {
        part: part.into(),
        size: size.into(),
        figure: figure.into(),
        value,
        reads: reads.into(),
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("BENCH_TABLE={path}"))?;
    writeln!(file, "{}", serde_json::to_string(&row)?)?;
    Ok(())
}

/// `1,000` for 1000: sizes read as they are written in the README.
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The rows as one Markdown table; a part or size repeated from the row
/// above is left blank so the table reads in blocks.
fn render(rows: &[Row]) -> String {
    let mut out = String::from("| part | size | figure | value | reads |\n|---|---|---|---|---|\n");
    let (mut part, mut size) = ("", "");
    for r in rows {
        let p = if r.part == part { "" } else { r.part.as_str() };
        let s = if r.part == part && r.size == size {
            ""
        } else {
            r.size.as_str()
        };
        out.push_str(&format!(
            "| {p} | {s} | {} | {} | {} |\n",
            r.figure,
            r.value,
            r.reads.replace('|', "\\|")
        ));
        (part, size) = (r.part.as_str(), r.size.as_str());
    }
    out
}

#[test]
#[ignore = "a benchmark: make bench prints its one table with it"]
fn print_the_table() -> Result<()> {
    let path = std::env::var("BENCH_TABLE").context("BENCH_TABLE names no file")?;
    let text = std::fs::read_to_string(&path).with_context(|| format!("BENCH_TABLE={path}"))?;
    let rows = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("{path}: {l}")))
        .collect::<Result<Vec<Row>>>()?;
    anyhow::ensure!(!rows.is_empty(), "{path} holds no rows");
    println!("\n{}", render(&rows));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(part: &str, size: &str, figure: &str) -> Row {
        Row {
            part: part.into(),
            size: size.into(),
            figure: figure.into(),
            value: "1".into(),
            reads: "a | b".into(),
        }
    }

    #[test]
    fn thousands_are_grouped() {
        for (n, want) in [
            (0, "0"),
            (100, "100"),
            (1000, "1,000"),
            (10000, "10,000"),
            (1234567, "1,234,567"),
        ] {
            assert_eq!(thousands(n), want);
        }
    }

    #[test]
    fn repeated_parts_and_sizes_are_blank_and_pipes_escaped() {
        let table = render(&[
            row("SLO", "100", "queries"),
            row("SLO", "100", "writes"),
            row("SLO", "1,000", "queries"),
            row("abort", "100", "median"),
        ]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[2], "| SLO | 100 | queries | 1 | a \\| b |");
        assert_eq!(lines[3], "|  |  | writes | 1 | a \\| b |");
        assert_eq!(lines[4], "|  | 1,000 | queries | 1 | a \\| b |");
        assert_eq!(lines[5], "| abort | 100 | median | 1 | a \\| b |");
    }
}
