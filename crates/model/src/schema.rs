//! The playbook's JSON Schema, for editors: generated from the same Rust
//! types the reader fills, so an editor that checks a playbook (the YAML
//! language server, with the modeline the examples carry) and `blackstart
//! validate` agree on the fields. `validate` stays the judge: the schema
//! cannot say that a dependency exists or that a stage selects anything.

use crate::playbook::PlaybookSpec;

/// The JSON Schema (draft 2020-12) of a playbook file.
pub fn playbook() -> serde_json::Value {
    let spec = schemars::generate::SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<PlaybookSpec>();
    let mut spec = serde_json::to_value(spec).unwrap_or_default();
    // The spec's own definitions move up to the root, where `$ref`s
    // (`#/$defs/...`) look for them.
    let defs = spec
        .as_object_mut()
        .and_then(|o| o.remove("$defs"))
        .unwrap_or_else(|| serde_json::json!({}));
    if let Some(o) = spec.as_object_mut() {
        o.remove("$schema");
        o.remove("title");
    }
    let string_map = serde_json::json!({
        "type": "object",
        "additionalProperties": { "type": "string" }
    });
    serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "blackstart Playbook",
        "description": "A controlled-restart playbook: sites, systems and the stages that bring them back. `blackstart validate` checks what a schema cannot (dependencies, stages, cycles).",
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": false,
        "properties": {
            "apiVersion": { "const": "blackstart.dev/v1alpha1" },
            "kind": { "const": "Playbook" },
            "metadata": {
                "type": "object",
                "required": ["name"],
                "additionalProperties": false,
                "properties": {
                    "name": { "type": "string" },
                    "namespace": { "type": "string" },
                    "labels": string_map,
                    "annotations": string_map
                }
            },
            "spec": spec
        },
        "$defs": defs
    })
}

/// [`playbook`] as the checked-in file holds it: pretty JSON and a newline.
pub fn playbook_text() -> String {
    let mut text = serde_json::to_string_pretty(&playbook()).unwrap_or_default();
    text.push('\n');
    text
}
