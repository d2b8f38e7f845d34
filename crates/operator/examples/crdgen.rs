//! Prints both CRDs as YAML documents; `cargo xtask crds` writes them to
//! `manifests/crds/` and `cargo xtask crds --check` compares.
fn main() {
    for crd in blackstart_operator::crd::crds() {
        match serde_saphyr::to_string(&crd) {
            Ok(yaml) => print!("---\n{yaml}"),
            Err(e) => {
                eprintln!("cannot write the CRD as YAML: {e}");
                std::process::exit(1);
            }
        }
    }
}
