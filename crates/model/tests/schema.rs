//! The checked-in JSON Schema is what the model's types give, and it
//! accepts every example playbook: an editor that checks a playbook with it
//! never flags a file `blackstart validate` takes.

use serde_json::Value;

/// A checker for the subset of JSON Schema the generated schema uses:
/// `$ref`, `type`, `properties`, `additionalProperties`, `required`,
/// `items`, `oneOf`, `anyOf`, `enum`, `const`. Returns every problem, with
/// its path in the document.
fn check(root: &Value, schema: &Value, value: &Value, at: &str, problems: &mut Vec<String>) {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r.trim_start_matches("#/$defs/");
        return check(root, &root["$defs"][name], value, at, problems);
    }
    if let Some(types) = schema.get("type") {
        let names: Vec<&str> = match types {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let fits = names.iter().any(|t| match *t {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            "null" => value.is_null(),
            _ => false,
        });
        if !fits {
            problems.push(format!("{at}: {value} is not {names:?}"));
            return;
        }
    }
    if let Some(c) = schema.get("const")
        && c != value
    {
        problems.push(format!("{at}: {value} is not {c}"));
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array)
        && !e.contains(value)
    {
        problems.push(format!("{at}: {value} is not one of {e:?}"));
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(options) = schema.get(key).and_then(Value::as_array) {
            let fitting = options
                .iter()
                .filter(|o| {
                    let mut mine = Vec::new();
                    check(root, o, value, at, &mut mine);
                    mine.is_empty()
                })
                .count();
            let ok = if key == "oneOf" {
                fitting == 1
            } else {
                fitting >= 1
            };
            if !ok {
                problems.push(format!("{at}: {fitting} of the {key} options fit {value}"));
            }
        }
    }
    if let Some(obj) = value.as_object() {
        let props = schema.get("properties").and_then(Value::as_object);
        for req in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(r) = req.as_str()
                && !obj.contains_key(r)
            {
                problems.push(format!("{at}: `{r}` is required"));
            }
        }
        for (k, v) in obj {
            let here = format!("{at}.{k}");
            match props.and_then(|p| p.get(k)) {
                Some(s) => check(root, s, v, &here, problems),
                None => match schema.get("additionalProperties") {
                    Some(Value::Bool(false)) => problems.push(format!("{here}: not allowed")),
                    Some(s @ Value::Object(_)) => check(root, s, v, &here, problems),
                    _ => {}
                },
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), value.as_array()) {
        for (i, v) in arr.iter().enumerate() {
            check(root, items, v, &format!("{at}[{i}]"), problems);
        }
    }
}

fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn the_checked_in_schema_is_current_and_accepts_every_example() {
    let checked_in = std::fs::read_to_string(root().join("schema/playbook.schema.json"))
        .expect("schema/playbook.schema.json is checked in");
    assert_eq!(
        checked_in,
        blackstart_model::schema::playbook_text(),
        "run `cargo xtask schema`"
    );
    let schema: Value = serde_json::from_str(&checked_in).expect("the schema is JSON");
    let mut files = Vec::new();
    for dir in ["playbooks", "manifests/examples"] {
        for entry in std::fs::read_dir(root().join(dir)).expect("the examples are there") {
            let path = entry.expect("a directory entry").path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.ends_with(".yaml")
                && std::fs::read_to_string(&path).is_ok_and(|t| t.contains("kind: Playbook"))
            {
                files.push(path);
            }
        }
    }
    assert!(files.len() >= 4, "{files:?}");
    for path in files {
        let text = std::fs::read_to_string(&path).expect("readable");
        let doc: Value = serde_saphyr::from_str(&text).expect("the example is YAML");
        let mut problems = Vec::new();
        check(&schema, &schema, &doc, "", &mut problems);
        assert!(problems.is_empty(), "{}: {problems:#?}", path.display());
    }
    // And it refuses what validate refuses: a typo in a field name.
    let typo: Value = serde_json::json!({
        "apiVersion": "blackstart.dev/v1alpha1", "kind": "Playbook",
        "metadata": { "name": "x" },
        "spec": { "sites": [], "systems": [], "stages": [], "defualts": {} }
    });
    let mut problems = Vec::new();
    check(&schema, &schema, &typo, "", &mut problems);
    assert_eq!(problems, [".spec.defualts: not allowed"]);
}

/// The playbook reference names every field the schema has: a field added
/// to the types without a line in `docs/playbook.md` fails here.
#[test]
fn the_playbook_reference_names_every_field() {
    fn fields(node: &Value, out: &mut std::collections::BTreeSet<String>) {
        match node {
            Value::Object(map) => {
                if let Some(Value::Object(props)) = map.get("properties") {
                    out.extend(props.keys().cloned());
                }
                for v in map.values() {
                    fields(v, out);
                }
            }
            Value::Array(items) => items.iter().for_each(|v| fields(v, out)),
            _ => {}
        }
    }
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("schema/playbook.schema.json")).unwrap(),
    )
    .unwrap();
    let docs = std::fs::read_to_string(root().join("docs/playbook.md")).unwrap();
    let mut names = std::collections::BTreeSet::new();
    fields(&schema, &mut names);
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| {
            !docs.contains(&format!("`{n}`"))
                && !docs.contains(&format!(".{n}`"))
                && !docs.contains(&format!("`{n}."))
                && !docs.contains(&format!("{n}:"))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "docs/playbook.md does not name: {missing:?}"
    );
}
