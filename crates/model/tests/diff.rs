//! What `diff` reports for each kind of change to a playbook.

use blackstart_model::diff::{Change, diff};
use blackstart_model::{Plan, load};

fn plan(yaml: &str) -> Plan {
    Plan::build(load(yaml.as_bytes()).unwrap_or_else(|d| panic!("{}", d.render("test.yaml"))))
}

const BASE: &str = "\
apiVersion: blackstart.dev/v1alpha1
kind: Playbook
metadata: { name: lab }
spec:
  defaults: { expectedDuration: 10s }
  sites: [ { id: dc } ]
  systems:
    - { id: net, site: dc, tier: data, start: { noop: {} } }
    - { id: db, site: dc, tier: data, dependsOn: [net], start: { exec: { command: [pg_ctl, start] } } }
    - { id: api, site: dc, tier: app, dependsOn: [db], start: { noop: {} } }
  stages:
    - { name: data, select: { tiers: [data] }, gate: { soak: 1m, approvals: [incident-commander] } }
    - { name: app, select: { tiers: [app] } }
";

#[test]
fn no_change_is_empty() {
    let d = diff(&plan(BASE), &plan(BASE));
    assert!(d.is_empty());
    assert_eq!(
        d.markdown(),
        "## Restart plan changes\n\nNo change to the restart: same stages, order, gates and systems.\n"
    );
}

#[test]
fn every_kind_of_change_is_listed() {
    let new = BASE
        .replace(
            "    - { id: api, site: dc, tier: app, dependsOn: [db], start: { noop: {} } }\n",
            "    - { id: api, site: dc, tier: data, dependsOn: [db, net], start: { noop: {} } }\n    - { id: web, site: dc, tier: app, start: { noop: {} } }\n",
        )
        .replace("pg_ctl, start", "pg_ctl, restart")
        .replace("soak: 1m, approvals: [incident-commander]", "soak: 5m, onFailure: rollback");
    let d = diff(&plan(BASE), &plan(&new));
    insta::assert_snapshot!("diff_markdown", d.markdown());
    insta::assert_snapshot!("diff_text", d.text());
}

#[test]
fn layer_changes_and_removals() {
    let new = BASE.replace("dependsOn: [net], start", "start").replace(
        "    - { id: api, site: dc, tier: app, dependsOn: [db], start: { noop: {} } }\n",
        "    - { id: api, site: dc, tier: app, start: { noop: {} } }\n",
    );
    let d = diff(&plan(BASE), &plan(&new));
    assert_eq!(d.layer_changes.len(), 1, "{d:?}");
    assert_eq!(d.layer_changes[0].system, "db");
    assert_eq!(
        (d.layer_changes[0].before, d.layer_changes[0].after),
        (1, 0)
    );
    assert_eq!(d.dependencies_removed.len(), 2);
    let removed = diff(&plan(&new), &plan(BASE));
    assert_eq!(removed.dependencies_added.len(), 2);
}

/// Adding a member, changing a key and declaring roles change who can
/// restart the plant: the diff calls each out.
#[test]
fn who_may_decide_is_called_out() {
    let key = |n: &str| {
        std::fs::read_to_string(format!(
            "{}/../../tests/keys/{n}.pub",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
        .trim()
        .to_owned()
    };
    let with = |members: &str| {
        BASE.replace(
            "  sites: [ { id: dc } ]\n",
            &format!("  roles:\n    - {{ name: incident-commander, members: [ {members} ] }}\n  sites: [ {{ id: dc }} ]\n"),
        )
    };
    let alice = format!("{{ name: alice, key: \"{}\" }}", key("alice"));
    let before = with(&alice);
    let after = with(&format!(
        "{{ name: alice, key: \"{}\" }}, {{ name: mallory }}",
        key("bob")
    ));
    let d = diff(&plan(&before), &plan(&after));
    let md = d.markdown();
    assert!(md.contains("### Who may decide"), "{md}");
    assert!(
        md.contains("**mallory may now decide as `incident-commander`**"),
        "{md}"
    );
    assert!(
        md.contains("**alice's key as `incident-commander` changed**: SHA256:"),
        "{md}"
    );
    let d = diff(&plan(BASE), &plan(&before));
    assert!(d.markdown().contains("roles declared"), "{}", d.markdown());
    let d = diff(&plan(&before), &plan(&with("{ name: carol }")));
    assert!(
        d.markdown()
            .contains("**alice may no longer decide as `incident-commander`**")
    );
}

#[test]
fn a_changed_site_connection_or_host_key_is_called_out() {
    let key_a =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMdBAnvXRz4FgxmUlVadVsuePkBOXOx7CMuLOVeBIS8+ a";
    let key_b =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJx2P2P8c9vt4nGkn9vY4mhXc4ZV3Xx5NGa8MCkBRpO4 b";
    let with = |host: &str, key: &str, kube: &str| {
        BASE.replace(
            "  sites: [ { id: dc } ]",
            &format!("  sites: [ {{ id: dc, connect: {{ ssh: {{ host: {host}, hostKey: \"{key}\" }}{kube} }} }} ]"),
        )
    };
    let base = with("jump.dc.example", key_a, "");
    assert!(diff(&plan(BASE), &plan(BASE)).connection_changes.is_empty());
    let d = diff(&plan(BASE), &plan(&base));
    assert_eq!(d.connection_changes.len(), 1, "{:?}", d.connection_changes);
    assert!(d.connection_changes[0].contains("now runs its exec steps over ssh"));
    let d = diff(&plan(&base), &plan(&with("jump.dc.example", key_b, "")));
    let md = d.markdown();
    assert!(md.contains("### Site connections"), "{md}");
    assert!(
        md.contains("`dc`'s pinned host key changed**: SHA256:"),
        "{md}"
    );
    let d = diff(
        &plan(&base),
        &plan(&with(
            "other.dc.example",
            key_a,
            ", kubernetes: { context: dc-prod }",
        )),
    );
    let md = d.markdown();
    assert!(
        md.contains("ssh host changed**: jump.dc.example:22 → other.dc.example:22"),
        "{md}"
    );
    assert!(
        md.contains("go to another cluster**: the default cluster → context dc-prod"),
        "{md}"
    );
    assert!(!md.contains("pinned host key"), "{md}");
}

#[test]
fn the_graph_shows_the_change_and_its_neighbours_only() {
    let chain = "\
apiVersion: blackstart.dev/v1alpha1
kind: Playbook
metadata: { name: chain }
spec:
  defaults: { expectedDuration: 10s }
  sites: [ { id: dc } ]
  systems:
    - { id: a, site: dc, tier: t, start: { noop: {} } }
    - { id: b, site: dc, tier: t, dependsOn: [a], start: { noop: {} } }
    - { id: c, site: dc, tier: t, dependsOn: [b], start: { noop: {} } }
    - { id: d, site: dc, tier: t, dependsOn: [c], start: { noop: {} } }
    - { id: e, site: dc, tier: t, dependsOn: [d, a], start: { noop: {} } }
  stages:
    - { name: all, select: { tiers: [t] } }
";
    // c's start changes; e stops waiting for a.
    let new = chain
        .replace(
            "id: c, site: dc, tier: t, dependsOn: [b], start: { noop: {} }",
            "id: c, site: dc, tier: t, dependsOn: [b], start: { exec: { command: [/bin/true] } }",
        )
        .replace("dependsOn: [d, a]", "dependsOn: [d]");
    let d = diff(&plan(chain), &plan(&new));
    let shown: Vec<(&str, Change)> = d
        .graph
        .nodes
        .iter()
        .map(|n| (n.system.as_str(), n.change))
        .collect();
    assert_eq!(
        shown,
        [
            ("a", Change::Changed),
            ("b", Change::Neighbour),
            ("c", Change::Changed),
            ("d", Change::Neighbour),
            ("e", Change::Changed),
        ]
    );
    let edges: Vec<(&str, &str, Change)> = d
        .graph
        .edges
        .iter()
        .map(|e| (e.depends_on.as_str(), e.system.as_str(), e.change))
        .collect();
    assert!(edges.contains(&("a", "e", Change::Removed)), "{edges:?}");
    assert!(edges.contains(&("b", "c", Change::Kept)), "{edges:?}");
    let mermaid = d.graph.mermaid();
    assert!(mermaid.contains("-.->|removed|"), "{mermaid}");
    assert!(mermaid.contains("<b>changed</b>"), "{mermaid}");

    // Only c's start changes: a and e are not drawn at all.
    let only_c = chain.replace(
        "id: c, site: dc, tier: t, dependsOn: [b], start: { noop: {} }",
        "id: c, site: dc, tier: t, dependsOn: [b], start: { exec: { command: [/bin/true] } }",
    );
    let d = diff(&plan(chain), &plan(&only_c));
    let ids: Vec<&str> = d.graph.nodes.iter().map(|n| n.system.as_str()).collect();
    assert_eq!(ids, ["b", "c", "d"]);
    assert_eq!(d.graph.edges.len(), 2);
    // No change, no graph.
    assert!(diff(&plan(chain), &plan(chain)).graph.is_empty());
}
