//! Generated docs are checked: the permission table of `docs/auth.md` is rendered from the
//! route table, and this test fails when the doc is stale (rust-analyzer's `xtask codegen`
//! pattern). `UPDATE_DOCS=1 cargo test -p xi-supervisor --test it docs` rewrites it.

use std::path::PathBuf;

use xi_supervisor::{route_table, Access};

const BEGIN: &str =
    "<!-- BEGIN GENERATED: route permissions (crates/supervisor/tests/it/docs.rs) -->";
const END: &str = "<!-- END GENERATED: route permissions -->";

fn auth_md() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/auth.md")
}

/// One row per route of the table, in its order.
fn permission_table() -> String {
    let mut out = String::from("| method | path | needs |\n|---|---|---|\n");
    for def in route_table() {
        let needs = match def.access {
            Access::Public => "public".to_string(),
            Access::Requires(p) => format!("`{p}`"),
            Access::Authenticated => "any authenticated caller".to_string(),
            Access::PublicOrRequires(p, switch) => {
                format!("public; `{p}` with `{}`", switch.flag())
            }
            Access::Cluster => "the cluster secret only".to_string(),
        };
        out.push_str(&format!(
            "| {} | `{}` | {needs} |\n",
            def.verb.as_str(),
            def.path
        ));
    }
    out
}

#[test]
fn the_permission_table_in_docs_auth_md_is_generated_from_the_route_table() {
    let path = auth_md();
    let doc = std::fs::read_to_string(&path).unwrap();
    let start = doc
        .find(BEGIN)
        .unwrap_or_else(|| panic!("{} has no {BEGIN:?} marker", path.display()))
        + BEGIN.len();
    let end = doc[start..]
        .find(END)
        .unwrap_or_else(|| panic!("{} has no {END:?} marker", path.display()))
        + start;
    let want = format!("\n{}", permission_table());
    if doc[start..end] == want {
        return;
    }
    if std::env::var_os("UPDATE_DOCS").is_some() {
        let updated = format!("{}{want}{}", &doc[..start], &doc[end..]);
        std::fs::write(&path, updated).unwrap();
        return;
    }
    panic!(
        "{} is stale: its permission table differs from the route table. Run \
         `UPDATE_DOCS=1 cargo test -p xi-supervisor --test it docs` and commit the result.\n\
         --- in the doc ---\n{}\n--- generated ---\n{want}",
        path.display(),
        &doc[start..end]
    );
}
