//! Roles and their members. A member's key is parsed here, where its
//! position is known: a key that does not parse would make every decision
//! of that person fail mid-incident, so it is refused before the restart.

use super::*;

impl Decode for Role {
    fn decode<'t>(node: &'t Node<'t>, cx: &mut Cx<'t>) -> Option<Self> {
        let mut f = Fields::of(node, "a role", cx)?;
        let name: Option<At<String>> = f.req("name", cx);
        let members: Option<Vec<At<(Member, Pos, Pos)>>> = f.req("members", cx);
        f.finish(cx);
        let At(name, name_pos) = name?;
        let members = members?;
        let src = RoleSrc {
            node: node.pos,
            name: name_pos,
            members: members.iter().map(|At((_, n, k), _)| (*n, *k)).collect(),
        };
        Some(Role {
            name,
            members: members.into_iter().map(|At((m, _, _), _)| m).collect(),
            src,
        })
    }
}

/// A member, with where its name and key are written.
impl Decode for (Member, Pos, Pos) {
    fn decode<'t>(node: &'t Node<'t>, cx: &mut Cx<'t>) -> Option<Self> {
        let mut f = Fields::of(node, "a member", cx)?;
        let name: Option<At<String>> = f.req("name", cx);
        let key: Option<At<String>> = f.opt("key", cx);
        f.finish(cx);
        let At(name, name_pos) = name?;
        let key_pos = key.as_ref().map_or(name_pos, |At(_, p)| *p);
        let mut key = key;
        if let Some(At(text, pos)) = &key
            && let Err(e) = ssh_key::PublicKey::from_openssh(text)
        {
            cx.diags.push(
                Diagnostic::error(
                    *pos,
                    format!("the key of `{name}` is not an OpenSSH public key: {e}"),
                )
                .with_help(
                    "paste one line of a .pub file, e.g. `ssh-ed25519 AAAAC3Nz… alice@corp`",
                ),
            );
            // Reported; the rest of the roles are still checked.
            key = None;
        }
        Some((
            Member {
                name,
                key: key.map(|At(k, _)| k),
            },
            name_pos,
            key_pos,
        ))
    }
}
