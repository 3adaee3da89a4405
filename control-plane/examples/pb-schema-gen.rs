//! Generates `src/apiserver/protobuf/k8s.schema`, the table the protobuf converter runs on.
//!
//! The Kubernetes protobuf encoding of the built-in kinds is defined by two sources in the
//! `k8s.io/api` and `k8s.io/apimachinery` modules: each package's `generated.proto` (message and
//! field names, numbers, wire types) and the Go structs in the same package (the JSON name of each
//! field, `omitempty`, `,inline`, and whether the Go field is a pointer — which decides whether an
//! explicit zero is kept). This tool reads both from a checkout of those modules at one tag and
//! writes the facts it needs as one line per field. Nothing else from upstream is carried over.
//!
//! ```sh
//! git clone --branch v0.33.9 <k8s.io/api> /tmp/api
//! git clone --branch v0.33.9 <k8s.io/apimachinery> /tmp/apimachinery
//! cargo run -p kwk-control-plane --example pb-schema-gen -- /tmp/api /tmp/apimachinery v0.33.9 \
//!     > control-plane/src/apiserver/protobuf/k8s.schema
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

/// Stable group versions the apiserver serves (paths under k8s.io/api).
const API_PACKAGES: &[&str] = &[
    "admissionregistration/v1",
    "apps/v1",
    "authentication/v1",
    "authorization/v1",
    "autoscaling/v1",
    "autoscaling/v2",
    "batch/v1",
    "certificates/v1",
    "coordination/v1",
    "core/v1",
    "discovery/v1",
    "events/v1",
    "flowcontrol/v1",
    "networking/v1",
    "node/v1",
    "policy/v1",
    "rbac/v1",
    "scheduling/v1",
    "storage/v1",
];

/// Packages under k8s.io/apimachinery that the API packages import.
const MACHINERY_PACKAGES: &[&str] = &[
    "pkg/apis/meta/v1",
    "pkg/api/resource",
    "pkg/util/intstr",
    "pkg/runtime",
];

/// `(message, special name, expected fields as (number, proto type))`.
type SpecialEntry = (&'static str, &'static str, &'static [(u32, &'static str)]);

/// Messages the converter handles by hand: their JSON form is not a JSON object of their fields.
const SPECIALS: &[SpecialEntry] = &[
    (
        "pkg.apis.meta.v1.Time",
        "time",
        &[(1, "int64"), (2, "int32")],
    ),
    (
        "pkg.apis.meta.v1.MicroTime",
        "microtime",
        &[(1, "int64"), (2, "int32")],
    ),
    ("pkg.apis.meta.v1.Duration", "duration", &[(1, "int64")]),
    ("pkg.apis.meta.v1.FieldsV1", "rawjson", &[(1, "bytes")]),
    ("pkg.api.resource.Quantity", "quantity", &[(1, "string")]),
    (
        "pkg.util.intstr.IntOrString",
        "intorstring",
        &[(1, "int64"), (2, "int32"), (3, "string")],
    ),
    ("pkg.runtime.RawExtension", "rawjson", &[(1, "bytes")]),
    (
        "pkg.runtime.Unknown",
        "unknown",
        &[
            (1, "pkg.runtime.TypeMeta"),
            (2, "bytes"),
            (3, "string"),
            (4, "string"),
        ],
    ),
];

/// Kinds of meta.k8s.io/v1 that every group version accepts (`metav1.AddToGroupVersion`).
const META_KINDS: &[&str] = &[
    "CreateOptions",
    "DeleteOptions",
    "GetOptions",
    "ListOptions",
    "PatchOptions",
    "Status",
    "UpdateOptions",
    "WatchEvent",
];

const SCALARS: &[&str] = &[
    "string", "bytes", "bool", "int32", "int64", "uint32", "uint64", "double", "float",
];

#[derive(Debug)]
struct ProtoField {
    number: u32,
    name: String,
    card: &'static str,
    ty: String,
}

#[derive(Debug, Default, Clone)]
struct GoField {
    json: String,
    pointer: bool,
    omitempty: bool,
    omitzero: bool,
    inline: bool,
    skip: bool,
}

type Res<T> = Result<T, String>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: pb-schema-gen <k8s.io/api dir> <k8s.io/apimachinery dir> <tag>");
        return ExitCode::from(2);
    }
    match run(Path::new(&args[1]), Path::new(&args[2]), &args[3]) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pb-schema-gen: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(api: &Path, machinery: &Path, tag: &str) -> Res<String> {
    let mut messages: BTreeMap<String, Vec<ProtoField>> = BTreeMap::new();
    let mut go: HashMap<String, BTreeMap<u32, GoField>> = HashMap::new();
    let mut list_types: BTreeSet<String> = BTreeSet::new();
    let mut kinds: Vec<(String, String, String)> = Vec::new();
    let mut aliases: Vec<(String, String)> = Vec::new();

    let dirs = MACHINERY_PACKAGES
        .iter()
        .map(|p| {
            (
                machinery.join(p),
                format!("pkg.{}", p.trim_start_matches("pkg/").replace('/', ".")),
            )
        })
        .chain(
            API_PACKAGES
                .iter()
                .map(|p| (api.join(p), format!("api.{}", p.replace('/', ".")))),
        );
    for (dir, short) in dirs {
        let proto = read(&dir.join("generated.proto"))?;
        parse_proto(&proto, &short, &mut messages)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        for entry in std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))? {
            let path = entry.map_err(|e| e.to_string())?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned();
            if !name.ends_with(".go")
                || name.ends_with("_test.go")
                || name.starts_with("zz_")
                || name.ends_with(".pb.go")
            {
                continue;
            }
            parse_go(
                &read(&path)?,
                &short,
                &mut go,
                &mut list_types,
                &mut aliases,
            );
        }
        if short.starts_with("api.") {
            kinds.extend(parse_register(&read(&dir.join("register.go"))?, &short)?);
        }
    }
    for (alias, target) in aliases {
        let fields = go
            .get(&target)
            .ok_or_else(|| format!("{alias}: alias of unknown {target}"))?;
        let copied = fields.iter().map(|(n, f)| (*n, f.clone())).collect();
        go.insert(alias, copied);
    }
    for kind in META_KINDS {
        kinds.push((
            "*".into(),
            (*kind).into(),
            format!("pkg.apis.meta.v1.{kind}"),
        ));
    }

    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Kubernetes protobuf schema for kwk's apiserver. GENERATED: do not edit."
    );
    let _ = writeln!(
        out,
        "# Source: k8s.io/api and k8s.io/apimachinery {tag}, by control-plane/examples/pb-schema-gen.rs."
    );
    let _ = writeln!(
        out,
        "# k <apiVersion|*> <Kind> <message>    a top-level kind (* = any served group version)"
    );
    let _ = writeln!(
        out,
        "# m <message> [special|list]            a message; `list` = a Go named slice wrapped in a message"
    );
    let _ = writeln!(
        out,
        "# <number> <json|-> <1|*|map> <type> <flags>   a field: p = Go pointer, o = omitempty,"
    );
    let _ = writeln!(
        out,
        "#   z = omitzero, i = inlined into the parent (json \",inline\"), x = not in JSON, - = none"
    );
    kinds.sort();
    for (gv, kind, msg) in &kinds {
        if messages.contains_key(msg) {
            let _ = writeln!(out, "k {gv} {kind} {msg}");
        } else {
            eprintln!("note: {gv} {kind} has no protobuf message; skipped");
        }
    }
    // Only messages reachable from a kind are written.
    let mut reachable: BTreeSet<&str> = BTreeSet::new();
    let mut queue: Vec<&str> = kinds
        .iter()
        .map(|(_, _, m)| m.as_str())
        .filter(|m| messages.contains_key(*m))
        .collect();
    while let Some(name) = queue.pop() {
        if reachable.insert(name) {
            queue.extend(
                messages[name]
                    .iter()
                    .map(|f| f.ty.as_str())
                    .filter(|t| messages.contains_key(*t)),
            );
        }
    }
    for (name, fields) in &messages {
        if !reachable.contains(name.as_str()) {
            continue;
        }
        if let Some((_, special, expect)) = SPECIALS.iter().find(|(n, _, _)| n == name) {
            let got: Vec<(u32, &str)> = fields.iter().map(|f| (f.number, f.ty.as_str())).collect();
            if got != *expect {
                return Err(format!("{name}: fields {got:?}, expected {expect:?}"));
            }
            let _ = writeln!(out, "m {name} {special}");
            continue;
        }
        let go_fields = go.get(name);
        let is_list = list_types.contains(name);
        if is_list {
            if fields.len() != 1 || fields[0].card != "*" || fields[0].name != "items" {
                return Err(format!(
                    "{name}: Go slice type but message is not {{repeated items = 1}}"
                ));
            }
            let _ = writeln!(out, "m {name} list");
        } else {
            let _ = writeln!(out, "m {name}");
        }
        for f in fields {
            if !SCALARS.contains(&f.ty.as_str()) && !messages.contains_key(&f.ty) {
                return Err(format!("{name}.{}: unknown type {}", f.name, f.ty));
            }
            let (json, flags) = if is_list {
                ("-".to_owned(), "-".to_owned())
            } else {
                let g = go_fields.and_then(|m| m.get(&f.number)).ok_or_else(|| {
                    format!(
                        "{name}.{} = {}: no Go field with that protobuf number",
                        f.name, f.number
                    )
                })?;
                let mut flags = String::new();
                for (on, c) in [
                    (g.pointer, 'p'),
                    (g.omitempty, 'o'),
                    (g.omitzero, 'z'),
                    (g.inline, 'i'),
                    (g.skip, 'x'),
                ] {
                    if on {
                        flags.push(c);
                    }
                }
                if g.inline && f.card != "1" {
                    return Err(format!(
                        "{name}.{}: inlined field is not a singular message",
                        f.name
                    ));
                }
                if !g.inline && !g.skip && g.json != f.name {
                    eprintln!(
                        "note: {name}.{}: JSON name {} differs from the proto name",
                        f.name, g.json
                    );
                }
                let json = if g.inline || g.skip {
                    "-".to_owned()
                } else {
                    g.json.clone()
                };
                (
                    json,
                    if flags.is_empty() {
                        "-".to_owned()
                    } else {
                        flags
                    },
                )
            };
            let _ = writeln!(out, "{} {} {} {} {}", f.number, json, f.card, f.ty, flags);
        }
    }
    Ok(out)
}

fn read(path: &Path) -> Res<String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// `k8s.io.api.core.v1.Pod` → `api.core.v1.Pod`; `k8s.io.apimachinery.pkg.X` → `pkg.X`.
fn shorten(name: &str) -> String {
    let name = name.trim_start_matches('.');
    if let Some(rest) = name.strip_prefix("k8s.io.apimachinery.") {
        rest.to_owned()
    } else if let Some(rest) = name.strip_prefix("k8s.io.") {
        rest.to_owned()
    } else {
        name.to_owned()
    }
}

fn parse_proto(text: &str, short: &str, out: &mut BTreeMap<String, Vec<ProtoField>>) -> Res<()> {
    let mut current: Option<String> = None;
    let mut in_comment = false;
    for raw in text.lines() {
        let line = raw.split("//").next().unwrap_or_default().trim();
        if in_comment || line.starts_with("/*") {
            in_comment = !line.ends_with("*/");
            continue;
        }
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("package ") {
            let pkg = shorten(rest.trim_end_matches(';'));
            if pkg != short {
                return Err(format!("package {pkg}, expected {short}"));
            }
        } else if let Some(rest) = line.strip_prefix("message ") {
            if current.is_some() {
                return Err(format!("nested message at {line}"));
            }
            let name = format!("{short}.{}", rest.trim_end_matches('{').trim());
            out.insert(name.clone(), Vec::new());
            current = Some(name);
        } else if line == "}" {
            current = None;
        } else if let Some(msg) = &current {
            let field = parse_proto_field(line, short)
                .ok_or_else(|| format!("cannot parse field `{line}` in {msg}"))?;
            if let Some(fields) = out.get_mut(msg) {
                fields.push(field);
            }
        } else if !(line.starts_with("syntax")
            || line.starts_with("import")
            || line.starts_with("option"))
        {
            return Err(format!("unexpected line `{line}`"));
        }
    }
    Ok(())
}

fn parse_proto_field(line: &str, short: &str) -> Option<ProtoField> {
    let (decl, number) = line.trim_end_matches(';').split_once('=')?;
    let number: u32 = number.trim().parse().ok()?;
    let resolve = |t: &str| {
        if SCALARS.contains(&t) {
            t.to_owned()
        } else if t.contains('.') {
            shorten(t)
        } else {
            format!("{short}.{t}")
        }
    };
    let decl = decl.trim();
    if let Some(rest) = decl.strip_prefix("map<") {
        let (types, name) = rest.split_once('>')?;
        let (key, value) = types.split_once(',')?;
        if key.trim() != "string" {
            return None;
        }
        return Some(ProtoField {
            number,
            name: name.trim().to_owned(),
            card: "map",
            ty: resolve(value.trim()),
        });
    }
    let mut parts = decl.split_whitespace();
    let card = match parts.next()? {
        "optional" | "required" => "1",
        "repeated" => "*",
        _ => return None,
    };
    let ty = resolve(parts.next()?);
    let name = parts.next()?.to_owned();
    Some(ProtoField {
        number,
        name,
        card,
        ty,
    })
}

/// Collects, for every struct of the package, its fields by protobuf number; and the named slice types.
fn parse_go(
    text: &str,
    short: &str,
    out: &mut HashMap<String, BTreeMap<u32, GoField>>,
    lists: &mut BTreeSet<String>,
    aliases: &mut Vec<(String, String)>,
) {
    let mut current: Option<String> = None;
    let mut depth = 0usize;
    for raw in text.lines() {
        let line = raw.trim();
        if line.starts_with("//") {
            continue;
        }
        match &current {
            None => {
                let Some(rest) = line.strip_prefix("type ") else {
                    continue;
                };
                let mut words = rest.split_whitespace();
                let (Some(name), Some(ty)) = (words.next(), words.next()) else {
                    continue;
                };
                if ty == "struct" && line.ends_with('{') {
                    current = Some(format!("{short}.{name}"));
                    depth = 1;
                } else if ty.starts_with("[]") && ty != "[]byte" {
                    lists.insert(format!("{short}.{name}"));
                } else if let Some(target) = ty.strip_prefix("metav1.") {
                    // `type List metav1.List`: the same Go fields as the meta type.
                    aliases.push((
                        format!("{short}.{name}"),
                        format!("pkg.apis.meta.v1.{target}"),
                    ));
                }
            }
            Some(name) => {
                depth += line.matches('{').count();
                depth = depth.saturating_sub(line.matches('}').count());
                if depth == 0 {
                    current = None;
                    continue;
                }
                if depth == 1
                    && let Some((number, field)) = parse_go_field(line)
                {
                    out.entry(name.clone()).or_default().insert(number, field);
                }
            }
        }
    }
}

fn parse_go_field(line: &str) -> Option<(u32, GoField)> {
    let (decl, tags) = line.split_once('`')?;
    let tag = |key: &str| -> Option<&str> {
        let start = tags.find(&format!("{key}:\""))? + key.len() + 2;
        let end = tags[start..].find('"')?;
        Some(&tags[start..start + end])
    };
    let proto = tag("protobuf")?;
    let number: u32 = proto.split(',').nth(1)?.parse().ok()?;
    let words: Vec<&str> = decl.split_whitespace().collect();
    let go_type = match words.as_slice() {
        [ty] | [_, ty] => *ty,
        _ => return None,
    };
    let json = tag("json").unwrap_or_default();
    let mut parts = json.split(',');
    let json_name = parts.next().unwrap_or_default();
    let options: Vec<&str> = parts.collect();
    let field = GoField {
        json: json_name.to_owned(),
        pointer: go_type.starts_with('*'),
        omitempty: options.contains(&"omitempty"),
        omitzero: options.contains(&"omitzero"),
        inline: options.contains(&"inline"),
        skip: json_name == "-",
    };
    Some((number, field))
}

/// The kinds a group version registers: `GroupName`, the version, and `AddKnownTypes(..., &T{}, ...)`.
fn parse_register(text: &str, short: &str) -> Res<Vec<(String, String, String)>> {
    let group = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("const GroupName = "))
        .map(|g| g.trim_matches('"').to_owned())
        .ok_or("register.go: no GroupName")?;
    let version = short.rsplit('.').next().unwrap_or_default();
    let gv = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    let mut kinds = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        let line = line.trim();
        if line.contains("AddKnownTypes(SchemeGroupVersion") {
            inside = true;
        }
        if inside {
            for piece in line.split('&').skip(1) {
                let Some(name) = piece.split("{}").next() else {
                    continue;
                };
                if !name.contains('.') && name.chars().all(|c| c.is_ascii_alphanumeric()) {
                    kinds.push((gv.clone(), name.to_owned(), format!("{short}.{name}")));
                }
            }
            if line.ends_with(')') {
                inside = false;
            }
        }
    }
    if kinds.is_empty() {
        return Err(format!("register.go of {short}: no kinds"));
    }
    Ok(kinds)
}
