//! `docs/configuration.md` is generated from the config structs' doc
//! comments (a small reader of the Rust source, no extra dependency), so it
//! cannot drift: the test renders it and fails when the committed file
//! differs. `GLASSHOUSE_BLESS=1` rewrites it.

use std::collections::BTreeMap;
use std::path::Path;

/// Where each table of each process's TOML file is declared: (process,
/// TOML table, source file, struct). Tables of one struct shared by two
/// processes are listed under each.
const SECTIONS: &[(&str, &str, &str, &str)] = &[
    ("glasshouse-agent", "", "agent/src/config.rs", "Config"),
    ("glasshouse-agent", "[tls]", "agent/src/config.rs", "TlsConfig"),
    (
        "glasshouse-agent",
        "[inventory]",
        "agent/src/config.rs",
        "InventoryConfig",
    ),
    ("glasshouse-aggregator", "", "aggregator/src/config.rs", "Config"),
    (
        "glasshouse-aggregator",
        "[tls]",
        "aggregator/src/config.rs",
        "TlsConfig",
    ),
    (
        "glasshouse-aggregator",
        "[topics]",
        "proto/runtime/src/kafka.rs",
        "TopicLayout",
    ),
    ("glasshouse-analyzer", "", "analyzer/src/config.rs", "Config"),
    (
        "glasshouse-analyzer",
        "[analysis]",
        "analyzer/src/config.rs",
        "Analysis",
    ),
    (
        "glasshouse-analyzer",
        "[topics]",
        "proto/runtime/src/kafka.rs",
        "TopicLayout",
    ),
    (
        "glasshouse-analyzer",
        "[outputs]",
        "analyzer/src/outputs.rs",
        "OutputsConfig",
    ),
    (
        "glasshouse-analyzer",
        "[[outputs.syslog]]",
        "analyzer/src/outputs.rs",
        "SyslogConfig",
    ),
    (
        "glasshouse-analyzer",
        "[outputs.webhook]",
        "analyzer/src/outputs.rs",
        "WebhookConfig",
    ),
    (
        "glasshouse-analyzer",
        "[vulns]",
        "analyzer/src/vulns/service.rs",
        "Config",
    ),
    (
        "glasshouse-analyzer",
        "[vulns.image_trust]",
        "analyzer/src/vulns/trust.rs",
        "Policy",
    ),
    (
        "glasshouse-analyzer",
        "[lake]",
        "analyzer/lake/src/config.rs",
        "LakeConfig",
    ),
    (
        "glasshouse-analyzer",
        "[lake.catalog]",
        "analyzer/lake/src/config.rs",
        "CatalogConfig",
    ),
    (
        "glasshouse-analyzer",
        "[lake.s3]",
        "analyzer/lake/src/config.rs",
        "S3Config",
    ),
    ("glasshouse-query", "", "analyzer/lake/src/query.rs", "QueryConfig"),
    (
        "glasshouse-query",
        "[lake]",
        "analyzer/lake/src/config.rs",
        "LakeConfig",
    ),
    (
        "glasshouse-query",
        "[lake.catalog]",
        "analyzer/lake/src/config.rs",
        "CatalogConfig",
    ),
    (
        "glasshouse-query",
        "[lake.s3]",
        "analyzer/lake/src/config.rs",
        "S3Config",
    ),
    ("glasshouse-query", "[sql]", "analyzer/lake/src/config.rs", "SqlConfig"),
];

/// Structs with `deny_unknown_fields` in those files that are not tables of
/// a config file (wire messages, the tokens file, test fixtures).
const NOT_CONFIG: &[&str] = &["ControlMessage", "TokensFile", "BoundEntry", "Sample"];

/// A struct as the source declares it.
#[derive(Debug, Default)]
struct Struct {
    doc: String,
    deny_unknown: bool,
    /// `#[serde(default)]` on the struct: every field is optional.
    defaulted: bool,
    fields: Vec<Field>,
}

#[derive(Debug)]
struct Field {
    name: String,
    ty: String,
    doc: String,
    required: bool,
}

/// Doc comment lines joined: a blank `///` line starts a new paragraph.
fn join_doc(lines: &[String]) -> String {
    let mut out = String::new();
    for l in lines {
        if l.is_empty() {
            out.push_str("\n\n");
        } else {
            if !out.is_empty() && !out.ends_with('\n') {
                out.push(' ');
            }
            out.push_str(l);
        }
    }
    out.trim().to_owned()
}

/// Every `pub struct` of a Rust source file with its doc comment and its
/// `pub` fields' doc comments, types and serde attributes.
fn structs(source: &str) -> BTreeMap<String, Struct> {
    let mut out = BTreeMap::new();
    let mut doc: Vec<String> = Vec::new();
    let mut attrs: Vec<String> = Vec::new();
    let mut current: Option<(String, Struct)> = None;
    for raw in source.lines() {
        let line = raw.trim();
        if let Some(d) = line.strip_prefix("///") {
            doc.push(d.strip_prefix(' ').unwrap_or(d).trim_end().to_owned());
            continue;
        }
        if line.starts_with("#[") {
            attrs.push(line.to_owned());
            continue;
        }
        if let Some((_, s)) = current.as_mut() {
            if raw.starts_with('}') {
                let (name, s) = current.take().unwrap_or_default();
                out.insert(name, s);
            } else if let Some(rest) = line.strip_prefix("pub ")
                && let Some((name, ty)) = rest.split_once(": ")
                && !name.contains(' ')
            {
                let serde: String = attrs.iter().filter(|a| a.starts_with("#[serde(")).cloned().collect();
                let ty = ty.trim_end_matches(',').to_owned();
                let optional = s.defaulted || serde.contains("default") || ty.starts_with("Option<");
                s.fields.push(Field {
                    name: name.to_owned(),
                    ty,
                    doc: join_doc(&doc),
                    required: !optional,
                });
            }
        } else if let Some(rest) = line.strip_prefix("pub struct ")
            && rest.ends_with('{')
        {
            let name = rest.trim_end_matches('{').trim().to_owned();
            let serde: String = attrs.iter().filter(|a| a.starts_with("#[serde(")).cloned().collect();
            current = Some((
                name,
                Struct {
                    doc: join_doc(&doc),
                    deny_unknown: serde.contains("deny_unknown_fields"),
                    defaulted: serde.contains("default"),
                    fields: Vec::new(),
                },
            ));
        }
        doc.clear();
        attrs.clear();
    }
    out
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace("\n\n", "<br><br>").replace('\n', " ")
}

/// The reference, rendered from the sources under `root`.
fn render(root: &Path) -> anyhow::Result<String> {
    let mut files: BTreeMap<&str, BTreeMap<String, Struct>> = BTreeMap::new();
    for (_, _, file, _) in SECTIONS {
        if !files.contains_key(file) {
            let text = std::fs::read_to_string(root.join(file)).map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
            files.insert(file, structs(&text));
        }
    }
    // Every config struct of those files is rendered somewhere.
    for (file, found) in &files {
        for (name, s) in found {
            let listed = SECTIONS.iter().any(|(_, _, f, n)| f == file && n == name);
            anyhow::ensure!(
                listed || !s.deny_unknown || NOT_CONFIG.contains(&name.as_str()),
                "{file}: config struct {name} has no section in tests/tests/docs/config_reference.rs SECTIONS"
            );
        }
    }
    let mut out = String::from(
        "# Configuration reference\n\n\
         <!-- Generated from the config structs' doc comments by\n\
         tests/tests/docs/config_reference.rs; do not edit: change the doc comment\n\
         and run `GLASSHOUSE_BLESS=1 cargo nextest run --workspace -E 'test(/config_reference/)'`. -->\n\n\
         Every process reads one TOML file (`--config FILE`); every field not\n\
         marked *required* has a default, and an unknown field is refused at start\n\
         with the file, position and field named. The local stack's files are\n\
         `deploy/local/*.toml`; the systemd and Helm deployments render their own\n\
         ([deployment.md](deployment.md)).\n",
    );
    let mut process = "";
    for (proc_name, table, file, name) in SECTIONS {
        let s = files.get(file).and_then(|f| f.get(*name)).ok_or_else(|| {
            anyhow::anyhow!("{file}: no `pub struct {name}` (tests/tests/docs/config_reference.rs SECTIONS)")
        })?;
        if *proc_name != process {
            process = proc_name;
            out.push_str(&format!("\n## {proc_name}\n"));
        }
        let title = if table.is_empty() {
            "top level".to_owned()
        } else {
            format!("`{table}`")
        };
        out.push_str(&format!("\n### {proc_name}: {title}\n\n"));
        out.push_str(&format!("<sub>`{name}` in `{file}`</sub>\n\n"));
        if !s.doc.is_empty() {
            out.push_str(&s.doc);
            out.push_str("\n\n");
        }
        out.push_str("| field | type | meaning |\n|---|---|---|\n");
        for f in &s.fields {
            anyhow::ensure!(
                // A table of its own is documented in its section.
                !f.doc.is_empty() || SECTIONS.iter().any(|(_, _, _, n)| f.ty.contains(n)),
                "{file}: field {name}.{} has no doc comment",
                f.name
            );
            let required = if f.required { " *(required)*" } else { "" };
            out.push_str(&format!(
                "| `{}`{required} | `{}` | {} |\n",
                f.name,
                cell(&f.ty),
                cell(&f.doc)
            ));
        }
    }
    Ok(out)
}

#[test]
fn configuration_reference_is_generated_from_the_config_structs() -> anyhow::Result<()> {
    let root = glasshouse_tests::manifest_dir().join("..");
    let rendered = render(&root)?;
    let path = root.join("docs/configuration.md");
    if std::env::var_os("GLASSHOUSE_BLESS").is_some() {
        std::fs::write(&path, &rendered)?;
        return Ok(());
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != rendered {
        let line = committed
            .lines()
            .zip(rendered.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| committed.lines().count().min(rendered.lines().count()));
        anyhow::bail!(
            "docs/configuration.md differs from the config structs' doc comments from line {}: \
             rerun with GLASSHOUSE_BLESS=1 and commit it\n  committed: {:?}\n  rendered:  {:?}",
            line + 1,
            committed.lines().nth(line).unwrap_or("(end)"),
            rendered.lines().nth(line).unwrap_or("(end)")
        );
    }
    Ok(())
}

#[test]
fn the_reader_finds_fields_docs_and_required_ones() {
    let src = r#"
/// The table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct T {
    /// First line
    /// second line.
    ///
    /// Next paragraph.
    #[serde(default = "d")]
    pub a: Vec<String>,
    /// Needed.
    pub b: PathBuf,
    /// Optional.
    pub c: Option<u64>,
}
"#;
    let found = structs(src);
    let t = &found["T"];
    assert!(t.deny_unknown);
    assert_eq!(t.doc, "The table.");
    assert_eq!(t.fields.len(), 3);
    assert_eq!(t.fields[0].doc, "First line second line.\n\nNext paragraph.");
    assert_eq!((t.fields[0].ty.as_str(), t.fields[0].required), ("Vec<String>", false));
    assert!(t.fields[1].required);
    assert!(!t.fields[2].required);
}
