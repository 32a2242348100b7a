//! Permission lists as requests carry them (names, aliases accepted) and as rows store them
//! (canonical names, space-separated).

use xi_api::PermissionSet;

use crate::error::{IdentityError, Result};

/// Parses a request's list; an unknown name is a 400 that names it and lists the known ones.
pub fn parse_request(names: &[String]) -> Result<PermissionSet> {
    let mut set = PermissionSet::EMPTY;
    for name in names {
        let one = PermissionSet::parse_name(name).ok_or_else(|| {
            IdentityError::BadRequest(format!(
                "unknown permission {name:?}; known: {}",
                PermissionSet::known_names().join(", ")
            ))
        })?;
        set = set.union(one);
    }
    Ok(set)
}

/// What a row stores.
pub fn stored(set: PermissionSet) -> String {
    set.names().join(" ")
}

/// Reads a stored list (written by [`stored`]; an unknown name, from a newer build, is dropped).
pub fn parse_stored(text: &str) -> PermissionSet {
    text.split_whitespace()
        .filter_map(PermissionSet::parse_name)
        .fold(PermissionSet::EMPTY, PermissionSet::union)
}

/// Canonical names, for answers.
pub fn names(set: PermissionSet) -> Vec<String> {
    set.names().into_iter().map(String::from).collect()
}

/// Whether `holder` holds everything in `wanted` (`admin` holds everything).
pub fn covers(holder: PermissionSet, wanted: PermissionSet) -> bool {
    holder.intersect(wanted) == wanted || holder.allows(xi_api::Permission::Admin)
}
