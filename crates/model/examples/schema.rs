//! Prints the playbook's JSON Schema; `cargo xtask schema` writes it to
//! `schema/playbook.schema.json` and `cargo xtask schema --check` compares.
fn main() {
    print!("{}", blackstart_model::schema::playbook_text());
}
