//! Reading a platform config repository checkout: every `*.yaml`/`*.yml`
//! file under the given paths (directories walked in sorted order, hidden
//! entries and symlinks skipped), split into documents with their lines.

use std::path::{Path, PathBuf};

use fluxgate_platform_defaults::documents::{Document, ParseError, parse_documents};

/// A document and the file it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The file, as given or found.
    pub file: PathBuf,
    /// The document.
    pub doc: Document,
}

/// Something that could not be read or parsed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A path could not be read.
    #[error("{path}: cannot read")]
    Read {
        /// The path.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// A document is not YAML.
    #[error("{path}:{}: not valid YAML: {}", .source.line, .source.message)]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's error, with its line.
        source: ParseError,
    },
}

impl LoadError {
    /// The file and line the error is about.
    pub fn location(&self) -> (&Path, usize) {
        match self {
            LoadError::Read { path, .. } => (path, 1),
            LoadError::Parse { path, source } => (path, source.line),
        }
    }
}

fn is_yaml(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"))
}

fn collect(path: &Path, files: &mut Vec<PathBuf>, errors: &mut Vec<LoadError>) {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(source) => {
            errors.push(LoadError::Read {
                path: path.to_owned(),
                source,
            });
            return;
        }
    };
    if meta.is_file() {
        files.push(path.to_owned());
        return;
    }
    if !meta.is_dir() {
        return;
    }
    let entries = match std::fs::read_dir(path) {
        Ok(e) => e,
        Err(source) => {
            errors.push(LoadError::Read {
                path: path.to_owned(),
                source,
            });
            return;
        }
    };
    let mut children: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    children.sort();
    for child in children {
        let hidden = child
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        let Ok(meta) = std::fs::symlink_metadata(&child) else {
            continue;
        };
        if hidden || meta.file_type().is_symlink() {
            continue;
        }
        if meta.is_dir() {
            collect(&child, files, errors);
        } else if is_yaml(&child) {
            files.push(child);
        }
    }
}

/// Loads every document under `paths`. Files given explicitly are read
/// whatever their extension; directories contribute their YAML files.
pub fn load(paths: &[PathBuf]) -> (Vec<Loaded>, Vec<LoadError>) {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        collect(path, &mut files, &mut errors);
    }
    let mut docs = Vec::new();
    for file in files {
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(source) => {
                errors.push(LoadError::Read { path: file, source });
                continue;
            }
        };
        for parsed in parse_documents(&text) {
            match parsed {
                Ok(doc) => docs.push(Loaded {
                    file: file.clone(),
                    doc,
                }),
                Err(source) => errors.push(LoadError::Parse {
                    path: file.clone(),
                    source,
                }),
            }
        }
    }
    (docs, errors)
}
