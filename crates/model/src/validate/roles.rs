//! The checks of who decides: the roles gates and manual steps name, and,
//! with `spec.roles`, that each is declared, has members, and that keys and
//! names are used once.

use super::*;

/// Gate roles are named, not declared: a role only one gate names, spelt
/// like one that others name, is most likely a typo, and a gate waiting for
/// a role nobody holds never opens.
pub(super) fn check_roles(pb: &Playbook, diags: &mut Diagnostics) {
    if let Some(roles) = &pb.spec.roles {
        check_declared_roles(pb, roles, diags);
        return;
    }
    let mut gates_naming: HashMap<&str, usize> = HashMap::new();
    for stage in &pb.spec.stages {
        let mut mine: Vec<&str> = stage.gate.approvals.iter().map(String::as_str).collect();
        mine.sort_unstable();
        mine.dedup();
        for role in mine {
            *gates_naming.entry(role).or_default() += 1;
        }
    }
    for stage in &pb.spec.stages {
        for (k, role) in stage.gate.approvals.iter().enumerate() {
            if gates_naming.get(role.as_str()) != Some(&1) {
                continue;
            }
            let others = gates_naming
                .iter()
                .filter(|&(r, &n)| *r != role && n > 1)
                .map(|(r, _)| *r);
            let Some(like) = crate::decode::nearest(role, others) else {
                continue;
            };
            let pos = stage
                .src
                .approvals
                .get(k)
                .copied()
                .unwrap_or(stage.src.node);
            diags.push(
                Diagnostic::warning(
                    pos,
                    format!(
                        "role `{role}` is named by this gate only, and `{like}` by {} others: a typo?",
                        gates_naming[like]
                    ),
                )
                .with_ids([stage.name.clone(), role.clone()])
                .with_help(format!("did you mean `{like}`?")),
            );
        }
    }
}

/// With `spec.roles`, every role a gate or a manual step names is declared
/// (a typo is an error, not a gate that never opens); a role and a member
/// appear once; a key belongs to one person, or separation of duties could
/// be had by one person under two names.
fn check_declared_roles(pb: &Playbook, roles: &[crate::playbook::Role], diags: &mut Diagnostics) {
    let mut seen: HashMap<&str, Pos> = HashMap::new();
    let mut keys: HashMap<String, (&str, Pos)> = HashMap::new();
    for role in roles {
        if let Some(first) = seen.insert(&role.name, role.src.name) {
            diags.push(
                Diagnostic::error(
                    role.src.name,
                    format!("role `{}` is declared twice", role.name),
                )
                .with_ids([role.name.clone()])
                .with_help(first_seen(first)),
            );
        }
        if role.members.is_empty() {
            diags.push(
                Diagnostic::error(
                    role.src.node,
                    format!(
                        "role `{}` has no members: nobody could decide for it",
                        role.name
                    ),
                )
                .with_ids([role.name.clone()]),
            );
        }
        let mut members: HashMap<&str, Pos> = HashMap::new();
        for (k, m) in role.members.iter().enumerate() {
            let (name_pos, key_pos) = role
                .src
                .members
                .get(k)
                .copied()
                .unwrap_or((role.src.node, role.src.node));
            if let Some(first) = members.insert(&m.name, name_pos) {
                diags.push(
                    Diagnostic::error(
                        name_pos,
                        format!("`{}` is a member of role `{}` twice", m.name, role.name),
                    )
                    .with_ids([role.name.clone(), m.name.clone()])
                    .with_help(first_seen(first)),
                );
            }
            let Some(key) = m
                .key
                .as_deref()
                .and_then(|k| ssh_key::PublicKey::from_openssh(k).ok())
            else {
                continue;
            };
            let fingerprint = key.fingerprint(ssh_key::HashAlg::Sha256).to_string();
            match keys.get(&fingerprint) {
                Some((owner, first)) if *owner != m.name => diags.push(
                    Diagnostic::error(
                        key_pos,
                        format!("the key {fingerprint} of `{}` is also enrolled for `{owner}`", m.name),
                    )
                    .with_ids([m.name.clone(), (*owner).to_owned()])
                    .with_help(format!(
                        "one key is one person: with it, one person could fill two roles of a gate ({})",
                        first_seen(*first)
                    )),
                ),
                Some(_) => {}
                None => {
                    keys.insert(fingerprint, (&m.name, key_pos));
                }
            }
        }
    }
    let declared: Vec<&str> = roles.iter().map(|r| r.name.as_str()).collect();
    let undeclared = |role: &str, pos: Pos, whose: String, diags: &mut Diagnostics| {
        if declared.contains(&role) {
            return;
        }
        let mut d = Diagnostic::error(
            pos,
            format!("role `{role}`, named by {whose}, is not declared in spec.roles"),
        )
        .with_ids([role.to_owned()]);
        d = match crate::decode::nearest(role, declared.iter().copied()) {
            Some(near) => d.with_help(format!("did you mean `{near}`?")),
            None => d.with_help(format!("declared roles: {}", declared.join(", "))),
        };
        diags.push(d);
    };
    for stage in &pb.spec.stages {
        for (k, role) in stage.gate.approvals.iter().enumerate() {
            let pos = stage
                .src
                .approvals
                .get(k)
                .copied()
                .unwrap_or(stage.src.node);
            undeclared(
                role,
                pos,
                format!("the gate of stage `{}`", stage.name),
                diags,
            );
        }
    }
    for sys in &pb.spec.systems {
        for action in std::iter::once(&sys.start).chain(sys.stop.as_ref()) {
            if let crate::playbook::Action::Manual(m) = action
                && let Some(role) = &m.role
            {
                undeclared(
                    role,
                    sys.src.node,
                    format!("the manual step of system `{}`", sys.id),
                    diags,
                );
            }
        }
    }
}
