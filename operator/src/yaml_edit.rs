//! The YAML editor for version bumps: changes only the bytes of one scalar, and nothing else.
//!
//! Comments, blank lines, quoting, key order, flow style, anchors and aliases, other documents
//! of the file, non-ASCII text and CRLF line ends stay byte-identical, because the file is
//! never re-serialized: a YAML parser that reports where each scalar is (saphyr-parser) finds
//! the one to change, and the new value is written in the old one's place, in the same style.
//! (Flux's image-automation-controller round-trips files through kyaml, and its users lose blank
//! lines, comments and block scalars; splicing bytes cannot.)

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

/// Which document of a (possibly multi-document) file to edit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Document<'a> {
    /// Its top-level `kind`, e.g. `HelmRelease`.
    pub kind: Option<&'a str>,
    /// Its `metadata.name`.
    pub name: Option<&'a str>,
    /// Its `metadata.namespace`. A document that names none matches any (Kustomize or the
    /// Kustomization's `targetNamespace` gives it one); one that names another does not.
    pub namespace: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    #[error("the file is not valid YAML: {0}")]
    Invalid(String),
    #[error("no document{} has {path}", describe(.document))]
    NotFound { document: String, path: String },
    #[error("{count} documents{} have {path}; name the one to edit", describe(.document))]
    Ambiguous {
        document: String,
        path: String,
        count: usize,
    },
    #[error(
        "{path} is not a single scalar value ({what}); FluxUp edits only plain or quoted scalars"
    )]
    NotAScalar { path: String, what: &'static str },
    #[error("{path} is an alias of another value; edit the value it points to")]
    Alias { path: String },
    #[error("{value:?} cannot be written as a YAML scalar here: {why}")]
    BadValue { value: String, why: &'static str },
}

fn describe(document: &str) -> String {
    if document.is_empty() {
        String::new()
    } else {
        format!(" ({document})")
    }
}

fn describe_document(doc: &Document) -> String {
    match (doc.kind, doc.name) {
        (Some(k), Some(n)) => format!("{k} {n}"),
        (Some(k), None) => k.to_string(),
        (None, Some(n)) => format!("named {n}"),
        (None, None) => String::new(),
    }
}

/// What the parser told us about one scalar: where it is and how it is written.
#[derive(Debug, Clone, Copy)]
struct Found {
    span: Span,
    /// None: an alias, or a mapping or list.
    style: Option<ScalarStyle>,
    container: bool,
}

enum Frame {
    Mapping { key: Option<String> },
    Sequence { index: usize },
}

/// The path segment a value at the top of `stack` has, and advances the frame past it.
fn segment(stack: &mut [Frame]) -> Option<String> {
    match stack.last_mut()? {
        Frame::Mapping { key } => key.take(),
        Frame::Sequence { index } => {
            *index += 1;
            Some((*index - 1).to_string())
        }
    }
}

/// Sets the scalar at `path` (dotted, e.g. `spec.chart.spec.version`; sequence items by index)
/// in the one document matching `document`, to `value`, and returns the new file.
pub fn set_scalar(
    source: &str,
    document: Document,
    path: &str,
    value: &str,
) -> Result<String, EditError> {
    let wanted: Vec<&str> = path.split('.').collect();
    let mut matches: Vec<Found> = Vec::new();

    // Per document: its kind, name, and the target if present.
    let mut stack: Vec<Frame> = Vec::new();
    let mut keys: Vec<String> = Vec::new(); // the path of the current container
    let (mut kind, mut name, mut target): (Option<String>, Option<String>, Option<Found>) =
        (None, None, None);
    let mut namespace: Option<String> = None;

    for item in Parser::new_from_str(source) {
        let (event, span) = item.map_err(|e| EditError::Invalid(e.to_string()))?;
        match event {
            Event::DocumentStart(_) => {
                stack.clear();
                keys.clear();
                (kind, name, target) = (None, None, None);
                namespace = None;
            }
            Event::DocumentEnd => {
                let selected = document.kind.is_none_or(|k| kind.as_deref() == Some(k))
                    && document.name.is_none_or(|n| name.as_deref() == Some(n))
                    && document
                        .namespace
                        .is_none_or(|n| namespace.as_deref().is_none_or(|d| d == n));
                if selected && let Some(found) = target.take() {
                    matches.push(found);
                }
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                if !stack.is_empty() {
                    let seg = match stack.last_mut() {
                        // A mapping or list as a key: never a path FluxUp edits.
                        Some(Frame::Mapping { key }) if key.is_none() => {
                            *key = Some("\u{0}".into());
                            "\u{0}key".to_string()
                        }
                        _ => segment(&mut stack).unwrap_or_default(),
                    };
                    keys.push(seg);
                    if keys.iter().map(String::as_str).eq(wanted.iter().copied()) {
                        target = Some(Found {
                            span,
                            style: None,
                            container: true,
                        });
                    }
                }
                stack.push(if matches!(event, Event::MappingStart(..)) {
                    Frame::Mapping { key: None }
                } else {
                    Frame::Sequence { index: 0 }
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                stack.pop();
                if !stack.is_empty() {
                    keys.pop();
                }
            }
            // A scalar, or an alias (which has no text or style of its own).
            Event::Scalar(..) | Event::Alias(_) => {
                let (text, style) = match event {
                    Event::Scalar(text, style, _, _) => (Some(text), Some(style)),
                    _ => (None, None),
                };
                if let Some(Frame::Mapping { key }) = stack.last_mut()
                    && key.is_none()
                {
                    *key = Some(text.map_or_else(|| "\u{0}".into(), |t| t.into_owned()));
                    continue;
                }
                let Some(seg) = segment(&mut stack) else {
                    continue;
                };
                let at: Vec<&str> = keys
                    .iter()
                    .map(String::as_str)
                    .chain([seg.as_str()])
                    .collect();
                if at == ["kind"] {
                    kind = text.as_ref().map(|t| t.to_string());
                } else if at == ["metadata", "name"] {
                    name = text.as_ref().map(|t| t.to_string());
                } else if at == ["metadata", "namespace"] {
                    namespace = text.as_ref().map(|t| t.to_string());
                }
                if at == wanted {
                    target = Some(Found {
                        span,
                        style,
                        container: false,
                    });
                }
            }
            _ => {}
        }
    }

    let doc = describe_document(&document);
    let found = match matches.as_slice() {
        [] => {
            return Err(EditError::NotFound {
                document: doc,
                path: path.into(),
            });
        }
        [one] => *one,
        many => {
            return Err(EditError::Ambiguous {
                document: doc,
                path: path.into(),
                count: many.len(),
            });
        }
    };
    if found.container {
        return Err(EditError::NotAScalar {
            path: path.into(),
            what: "a mapping or a list",
        });
    }
    let Some(style) = found.style else {
        return Err(EditError::Alias { path: path.into() });
    };
    let (start, end) = byte_range(source, found.span);
    let written = &source[start..end];
    // An anchor or tag before the value stays: `&registry-image ghcr.io/x` → edit after it.
    let value_start = start + properties_len(written);
    // The parser's span of a scalar can run past it, over a comment on the same line.
    let end = value_start + scalar_len(&source[value_start..end], style);
    let rendered = render(&source[value_start..end], style, value, path)?;
    let mut out = String::with_capacity(source.len() + rendered.len());
    out.push_str(&source[..value_start]);
    out.push_str(&rendered);
    out.push_str(&source[end..]);
    Ok(out)
}

/// The parser counts characters; slices need bytes.
fn byte_range(source: &str, span: Span) -> (usize, usize) {
    let byte = |chars: usize| {
        source
            .char_indices()
            .nth(chars)
            .map_or(source.len(), |(b, _)| b)
    };
    (byte(span.start.index()), byte(span.end.index()))
}

/// Length in bytes of the scalar written at the start of `text`: up to its closing quote, or for
/// a plain scalar up to a comment (` #`) or the end, without trailing blanks.
fn scalar_len(text: &str, style: ScalarStyle) -> usize {
    let mut chars = text.char_indices().skip(1).peekable();
    match style {
        ScalarStyle::DoubleQuoted => {
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        chars.next();
                    }
                    '"' => return i + 1,
                    _ => {}
                }
            }
            text.len()
        }
        ScalarStyle::SingleQuoted => {
            while let Some((i, c)) = chars.next() {
                if c == '\'' {
                    if chars.peek().is_some_and(|(_, n)| *n == '\'') {
                        chars.next();
                    } else {
                        return i + 1;
                    }
                }
            }
            text.len()
        }
        _ => {
            let cut = text
                .char_indices()
                .find(|&(i, c)| c == '#' && i > 0 && text[..i].ends_with([' ', '\t']))
                .map_or(text.len(), |(i, _)| i);
            text[..cut].trim_end().len()
        }
    }
}

/// Length of the `&anchor ` / `!tag ` properties written before a scalar.
fn properties_len(written: &str) -> usize {
    let mut rest = written;
    while rest.starts_with('&') || rest.starts_with('!') {
        let token_end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let after = &rest[token_end..];
        rest = after.trim_start();
    }
    written.len() - rest.len()
}

/// Whether a plain scalar with this text would be read as something other than a string
/// (YAML 1.2 core schema, plus the YAML 1.1 booleans Go's YAML libraries still honour).
fn resolves_to_non_string(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    matches!(
        lower.as_str(),
        "" | "~"
            | "null"
            | "true"
            | "false"
            | "yes"
            | "no"
            | "on"
            | "off"
            | "y"
            | "n"
            | ".inf"
            | "-.inf"
            | "+.inf"
            | ".nan"
    ) || text.parse::<f64>().is_ok()
        || (text.starts_with("0x") && i64::from_str_radix(&text[2..], 16).is_ok())
        || (text.starts_with("0o") && i64::from_str_radix(&text[2..], 8).is_ok())
}

/// Whether `text` can be written as a plain scalar in block context without changing meaning.
fn plain_safe(text: &str) -> bool {
    let first_ok = text
        .chars()
        .next()
        .is_some_and(|c| c.is_alphanumeric() || matches!(c, '.' | '/' | '_' | '+'));
    first_ok
        && !text.contains(": ")
        && !text.contains(" #")
        && !text.ends_with(':')
        && !text.contains(['\n', '\r', '\t', '{', '}', '[', ']', ',', '"', '\''])
        && text.trim() == text
}

fn render(old: &str, style: ScalarStyle, value: &str, path: &str) -> Result<String, EditError> {
    if value.contains(['\n', '\r']) {
        return Err(EditError::BadValue {
            value: value.into(),
            why: "a version has no line breaks",
        });
    }
    match style {
        ScalarStyle::Plain => {
            // Keep it plain unless that would change what it means: a tag "1.10" written plain
            // is the number 1.1.
            let keeps_type = resolves_to_non_string(old) || !resolves_to_non_string(value);
            if plain_safe(value) && keeps_type {
                Ok(value.to_string())
            } else {
                Ok(double_quoted(value))
            }
        }
        ScalarStyle::DoubleQuoted => Ok(double_quoted(value)),
        ScalarStyle::SingleQuoted => Ok(format!("'{}'", value.replace('\'', "''"))),
        ScalarStyle::Literal | ScalarStyle::Folded => Err(EditError::NotAScalar {
            path: path.into(),
            what: "a block scalar",
        }),
    }
}

fn double_quoted(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The new text of an image tag field: the new tag, and the new digest after it when the old
/// value pinned one (`1.2.3@sha256:…`). An image the author did not pin stays unpinned.
pub fn image_tag_value(
    old: &str,
    new_tag: &str,
    new_digest: Option<&str>,
) -> Result<String, EditError> {
    let pinned = crate::renovate::split_digest(old).1.is_some();
    match (pinned, new_digest) {
        (true, Some(digest)) => Ok(format!("{new_tag}@{digest}")),
        (true, None) => Err(EditError::BadValue {
            value: new_tag.into(),
            why: "the image is pinned by digest, and the new tag's digest is not known",
        }),
        (false, _) => Ok(new_tag.into()),
    }
}

/// The new text of an `image: registry/repo:tag@digest` string: only the tag (and the digest,
/// when pinned) change.
pub fn image_ref_value(
    old: &str,
    new_tag: &str,
    new_digest: Option<&str>,
) -> Result<String, EditError> {
    let (reference, _) = crate::renovate::split_digest(old);
    let slash = reference.rfind('/').map_or(0, |i| i + 1);
    let name = match reference[slash..].rfind(':') {
        Some(i) => &reference[..slash + i],
        None => reference,
    };
    let tag = image_tag_value(old, new_tag, new_digest)?;
    Ok(format!("{name}:{tag}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_of_another_namespace_is_not_the_one() {
        let src = "kind: HelmRelease\nmetadata: {name: web, namespace: team-b}\nspec: {chart: {spec: {version: 1.0.0}}}\n---\nkind: HelmRelease\nmetadata: {name: web}\nspec: {chart: {spec: {version: 1.0.0}}}\n";
        let doc = Document {
            kind: Some("HelmRelease"),
            name: Some("web"),
            namespace: Some("team-a"),
        };
        let out = set_scalar(src, doc, "spec.chart.spec.version", "2.0.0").unwrap();
        assert_eq!(out.matches("2.0.0").count(), 1);
        assert!(out.starts_with("kind: HelmRelease\nmetadata: {name: web, namespace: team-b}\nspec: {chart: {spec: {version: 1.0.0}}}"));
        let only_b = "kind: HelmRelease\nmetadata: {name: web, namespace: team-b}\nspec: {chart: {spec: {version: 1.0.0}}}\n";
        assert!(matches!(
            set_scalar(only_b, doc, "spec.chart.spec.version", "2.0.0"),
            Err(EditError::NotFound { .. })
        ));
    }

    #[test]
    fn image_values_keep_or_update_their_digest() {
        assert_eq!(
            image_tag_value("1.0.0", "1.1.0", Some("sha256:b")).unwrap(),
            "1.1.0"
        );
        assert_eq!(
            image_tag_value("1.0.0@sha256:a", "1.1.0", Some("sha256:b")).unwrap(),
            "1.1.0@sha256:b"
        );
        assert!(image_tag_value("1.0.0@sha256:a", "1.1.0", None).is_err());
        assert_eq!(
            image_ref_value(
                "127.0.0.1:5000/demo/api:1.0.0@sha256:a",
                "1.0.1",
                Some("sha256:b")
            )
            .unwrap(),
            "127.0.0.1:5000/demo/api:1.0.1@sha256:b"
        );
        assert_eq!(
            image_ref_value("nginx", "1.27.1", None).unwrap(),
            "nginx:1.27.1"
        );
    }

    const HR: Document = Document {
        kind: Some("HelmRelease"),
        name: None,
        namespace: None,
    };

    fn set(source: &str, path: &str, value: &str) -> String {
        set_scalar(source, HR, path, value).unwrap()
    }

    #[test]
    fn only_the_version_bytes_change() {
        let src = "apiVersion: helm.toolkit.fluxcd.io/v2\r\nkind: HelmRelease # the app\r\n\r\nmetadata:\r\n  name: web   # ñ\r\nspec:\r\n  chart:\r\n    spec:\r\n      chart: web\r\n      version: 1.0.0 # pinned\r\n";
        let out = set(src, "spec.chart.spec.version", "1.1.0");
        assert_eq!(out, src.replace("version: 1.0.0", "version: 1.1.0"));
    }

    #[test]
    fn quoting_is_kept_and_added_only_when_meaning_would_change() {
        let src =
            "kind: HelmRelease\nspec:\n  values:\n    a: \"1.0\"\n    b: '2.0'\n    c: 3.0.0\n";
        let out = set(src, "spec.values.a", "1.1");
        assert!(out.contains("a: \"1.1\"\n"), "{out}");
        let out = set(src, "spec.values.b", "it's");
        assert!(out.contains("b: 'it''s'\n"), "{out}");
        // 3.0.0 is a string; 3.10 written plain would be the number 3.1.
        let out = set(src, "spec.values.c", "3.10");
        assert!(out.contains("c: \"3.10\"\n"), "{out}");
        let out = set(src, "spec.values.c", "3.1.0");
        assert!(out.contains("c: 3.1.0\n"), "{out}");
    }

    #[test]
    fn anchors_stay_and_aliases_are_refused() {
        let src = "kind: HelmRelease\nspec:\n  values:\n    image:\n      repository: &img ghcr.io/x/web\n      tag: 1.0.0\n    env:\n      - value: *img\n";
        let out = set(src, "spec.values.image.repository", "ghcr.io/x/web2");
        assert!(out.contains("repository: &img ghcr.io/x/web2\n"), "{out}");
        assert_eq!(
            set_scalar(src, HR, "spec.values.env.0.value", "x"),
            Err(EditError::Alias {
                path: "spec.values.env.0.value".into()
            })
        );
    }

    #[test]
    fn flow_style_and_multi_document_files() {
        let src = "---\nkind: OCIRepository\nmetadata: {name: api}\nspec: {url: oci://r/charts/api, ref: {tag: 1.0.0}}\n---\nkind: OCIRepository\nmetadata: {name: db}\nspec: {url: oci://r/charts/db, ref: {tag: 1.0.0}}\n";
        let doc = Document {
            kind: Some("OCIRepository"),
            name: Some("db"),
            namespace: None,
        };
        let out = set_scalar(src, doc, "spec.ref.tag", "2.0.0").unwrap();
        let (before, after) = src.rsplit_once("tag: 1.0.0").unwrap();
        assert_eq!(out, format!("{before}tag: 2.0.0{after}"));
        let any = Document {
            kind: Some("OCIRepository"),
            name: None,
            namespace: None,
        };
        assert!(matches!(
            set_scalar(src, any, "spec.ref.tag", "2.0.0"),
            Err(EditError::Ambiguous { count: 2, .. })
        ));
    }

    #[test]
    fn what_cannot_be_edited_says_why() {
        let src =
            "kind: HelmRelease\nspec:\n  values:\n    notes: |\n      1.0.0\n    image: {tag: 1}\n";
        assert!(matches!(
            set_scalar(src, HR, "spec.values.notes", "2"),
            Err(EditError::NotAScalar {
                what: "a block scalar",
                ..
            })
        ));
        assert!(matches!(
            set_scalar(src, HR, "spec.values.image", "2"),
            Err(EditError::NotAScalar { .. })
        ));
        assert!(matches!(
            set_scalar(src, HR, "spec.values.missing", "2"),
            Err(EditError::NotFound { .. })
        ));
        assert!(matches!(
            set_scalar("kind: [", HR, "a", "b"),
            Err(EditError::Invalid(_))
        ));
    }
}

#[cfg(test)]
mod comment_tests {
    use super::*;

    #[test]
    fn a_comment_after_the_value_stays() {
        let doc = Document {
            kind: None,
            name: None,
            namespace: None,
        };
        for (before, after) in [
            ("tag: \"1.0.0\" # c\n", "tag: \"1.2.0\" # c\n"),
            ("tag: '1.0.0'  # c\n", "tag: '1.2.0'  # c\n"),
            ("tag: 1.0.0 # c\n", "tag: 1.2.0 # c\n"),
            (
                "tag: \"1.0.0\"\nnext: 1 # c\n",
                "tag: \"1.2.0\"\nnext: 1 # c\n",
            ),
        ] {
            assert_eq!(set_scalar(before, doc, "tag", "1.2.0").unwrap(), after);
        }
    }
}
