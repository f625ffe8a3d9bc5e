//! `headroom import openslo|sloth|pyrra FILE`: translate SLOs other tools
//! define into ServiceLevelObjectives whose alerts fire, route and stay
//! quiet as the source's did. What cannot be translated faithfully is
//! refused with the source field that stops it, never half-translated; the
//! output is checked as `headroom rules` would check it before it is
//! printed, and a failure there is blamed on the source field too.

mod check;
mod node;
mod openslo;
mod pyrra;
mod sloth;

use serde_yaml::Value;
use thiserror::Error;

use crate::resources::slo::ServiceLevelObjective;

pub use check::Blame;
pub use sloth::AlertWindows;

/// Why a source cannot be translated: the source field and the reason.
#[derive(Debug, Error, PartialEq)]
#[error("{field}: {reason}")]
pub struct ImportError {
    pub field: String,
    pub reason: String,
}

impl ImportError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ImportError {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// A refusal in one document of a file (1-based, as editors count; 0 for
/// the command line's options).
#[derive(Debug, Error, PartialEq)]
#[error("{}cannot translate {error}", where_(*.document))]
pub struct DocumentError {
    pub document: usize,
    pub error: ImportError,
}

fn where_(document: usize) -> String {
    if document == 0 {
        String::new()
    } else {
        format!("document {document}: ")
    }
}

/// The formats `headroom import` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Sloth,
    Pyrra,
    OpenSlo,
}

/// What the source file does not say and the command line may.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Sloth's SLO period (its `--default-slo-period`); Sloth files carry
    /// none. Defaults to 30d. Pyrra and OpenSLO state their own.
    pub period: Option<String>,
    /// Sloth `AlertWindows` catalogues (its `--slo-period-windows-path`),
    /// besides the built-in 28d and 30d ones.
    pub windows: Vec<AlertWindows>,
}

/// The translation of a whole file.
#[derive(Debug, Default)]
pub struct Imported {
    pub slos: Vec<ServiceLevelObjective>,
    /// What the source had that Headroom leaves to its own behaviour, said
    /// once per SLO (e.g. Pyrra's absent-metric alert).
    pub notes: Vec<String>,
}

/// Translate every document of `text` (several `---` documents, or a
/// top-level list of them as OpenSLO allows).
pub fn import(format: Format, text: &str, options: &Options) -> Result<Imported, DocumentError> {
    let docs = documents(text)?;
    if let Format::Sloth = format {
        if options.period.is_some() || !options.windows.is_empty() {
            sloth::check_options(options).map_err(|error| DocumentError { document: 0, error })?;
        }
    } else if options.period.is_some() {
        return Err(DocumentError {
            document: 0,
            error: ImportError::new(
                "--period",
                "only Sloth files need a period: Pyrra and OpenSLO state their own window",
            ),
        });
    }
    let mut out = Imported::default();
    match format {
        Format::Sloth => {
            for (document, doc) in docs {
                let (slos, notes) = sloth::translate(doc, options)
                    .map_err(|error| DocumentError { document, error })?;
                out.slos.extend(slos);
                out.notes.extend(notes);
            }
        }
        Format::Pyrra => {
            for (document, doc) in docs {
                let (slos, notes) =
                    pyrra::translate(doc).map_err(|error| DocumentError { document, error })?;
                out.slos.extend(slos);
                out.notes.extend(notes);
            }
        }
        // OpenSLO documents refer to each other (an SLO's `indicatorRef`
        // names an SLI elsewhere in the file), so they are read together.
        Format::OpenSlo => {
            let (slos, notes) = openslo::translate(&docs)?;
            out.slos.extend(slos);
            out.notes.extend(notes);
        }
    }
    Ok(out)
}

/// The documents of a file, numbered from 1, a top-level list unfolded (its
/// items share their document's number).
fn documents(text: &str) -> Result<Vec<(usize, Value)>, DocumentError> {
    let mut out = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = <Value as serde::Deserialize>::deserialize(doc).map_err(|e| DocumentError {
            document: i + 1,
            error: ImportError::new("(document)", format!("not YAML: {e}")),
        })?;
        match value {
            Value::Null => {}
            Value::Sequence(items) => out.extend(items.into_iter().map(|v| (i + 1, v))),
            other => out.push((i + 1, other)),
        }
    }
    Ok(out)
}

/// `{{.window}}` (Sloth, OpenSLO as Sloth reads it) becomes `$window`.
fn window_template(query: &str) -> String {
    let mut out = String::with_capacity(query.len());
    let mut rest = query;
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start..].find("}}") else {
            break;
        };
        let inner = rest[start + 2..start + len].trim();
        out.push_str(&rest[..start]);
        if inner == ".window" {
            out.push_str(crate::indicator::WINDOW_PLACEHOLDER);
        } else {
            // Left for the check to refuse: an unknown template is not PromQL.
            out.push_str(&rest[start..start + len + 2]);
        }
        rest = &rest[start + len + 2..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests;
