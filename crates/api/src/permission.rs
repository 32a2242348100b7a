//! Permission names, their config-file aliases and a compact set type.

use std::fmt;

/// One permission of the auth system. `Admin` implies every other one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    ModelsList,
    ModelsRead,
    ModelsRegister,
    ModelsUnregister,
    ModelsStart,
    ModelsStop,
    CacheList,
    CacheDelete,
    /// Manage the identity store's users (`/v1/admin/users`).
    UsersManage,
    /// Create, list and revoke one's own api keys.
    KeysCreate,
    /// Manage everyone's api keys.
    KeysManage,
    Admin,
}

impl Permission {
    /// Every permission, in the order the docs list them.
    pub const ALL: [Permission; 12] = [
        Permission::ModelsList,
        Permission::ModelsRead,
        Permission::ModelsRegister,
        Permission::ModelsUnregister,
        Permission::ModelsStart,
        Permission::ModelsStop,
        Permission::CacheList,
        Permission::CacheDelete,
        Permission::UsersManage,
        Permission::KeysCreate,
        Permission::KeysManage,
        Permission::Admin,
    ];

    /// The canonical string, as written in config files and JWT `scopes`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Permission::ModelsList => "models:list",
            Permission::ModelsRead => "models:read",
            Permission::ModelsRegister => "models:register",
            Permission::ModelsUnregister => "models:unregister",
            Permission::ModelsStart => "models:start",
            Permission::ModelsStop => "models:stop",
            Permission::CacheList => "cache:list",
            Permission::CacheDelete => "cache:delete",
            Permission::UsersManage => "users:manage",
            Permission::KeysCreate => "keys:create",
            Permission::KeysManage => "keys:manage",
            Permission::Admin => "admin",
        }
    }

    const fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of permissions. Holding `admin` means holding all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct PermissionSet(u16);

impl PermissionSet {
    pub const EMPTY: PermissionSet = PermissionSet(0);
    /// What `admin` expands to: every permission.
    pub const ALL: PermissionSet = PermissionSet((1 << Permission::ALL.len()) - 1);

    /// Parses one permission string as accepted in config files and tokens, aliases included:
    /// `models:write` (upstream v2.12) = start + stop, `models:add` (upstream's old name) = register.
    /// `None` for an unknown string.
    pub fn parse_name(name: &str) -> Option<PermissionSet> {
        let set = match name {
            "models:write" => {
                PermissionSet::of(Permission::ModelsStart).with(Permission::ModelsStop)
            }
            "models:add" => PermissionSet::of(Permission::ModelsRegister),
            // Managing everyone's keys includes creating one's own.
            "keys:manage" => PermissionSet::of(Permission::KeysManage).with(Permission::KeysCreate),
            "admin" => PermissionSet::ALL,
            other => {
                let perm = Permission::ALL.into_iter().find(|p| p.as_str() == other)?;
                PermissionSet::of(perm)
            }
        };
        Some(set)
    }

    /// The names every string accepted by [`PermissionSet::parse_name`], for error messages.
    pub fn known_names() -> Vec<&'static str> {
        let mut names: Vec<&'static str> = Permission::ALL.iter().map(|p| p.as_str()).collect();
        names.extend(["models:write", "models:add"]);
        names
    }

    /// Parses a list of names (config files, single sign-on mappings): their union, or the
    /// first unknown one with its position.
    pub fn parse_list<'a>(
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<PermissionSet, UnknownPermission> {
        let mut set = PermissionSet::EMPTY;
        for (index, name) in names.into_iter().enumerate() {
            let parsed = PermissionSet::parse_name(name).ok_or_else(|| UnknownPermission {
                index,
                name: name.to_string(),
            })?;
            set = set.union(parsed);
        }
        Ok(set)
    }

    pub const fn of(perm: Permission) -> PermissionSet {
        PermissionSet(perm.bit())
    }

    pub const fn with(self, perm: Permission) -> PermissionSet {
        PermissionSet(self.0 | perm.bit())
    }

    pub const fn union(self, other: PermissionSet) -> PermissionSet {
        PermissionSet(self.0 | other.0)
    }

    pub const fn intersect(self, other: PermissionSet) -> PermissionSet {
        PermissionSet(self.0 & other.0)
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether this set grants `perm`: it holds it, or it holds `admin`.
    pub const fn allows(self, perm: Permission) -> bool {
        self.0 & Permission::Admin.bit() != 0 || self.0 & perm.bit() != 0
    }

    /// The canonical names held, `admin` alone when it is held.
    pub fn names(self) -> Vec<&'static str> {
        if self.allows(Permission::Admin) {
            return vec![Permission::Admin.as_str()];
        }
        Permission::ALL
            .into_iter()
            .filter(|p| self.0 & p.bit() != 0)
            .map(Permission::as_str)
            .collect()
    }
}

/// A name [`PermissionSet::parse_list`] does not know, and where it stood in the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownPermission {
    pub index: usize,
    pub name: String,
}

impl fmt::Display for UnknownPermission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown permission {:?}; known: {}",
            self.name,
            PermissionSet::known_names().join(", ")
        )
    }
}

impl FromIterator<Permission> for PermissionSet {
    fn from_iter<I: IntoIterator<Item = Permission>>(iter: I) -> Self {
        iter.into_iter()
            .fold(PermissionSet::EMPTY, |set, perm| set.with(perm))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_allows_everything_and_aliases_expand() {
        let admin = PermissionSet::parse_name("admin").unwrap();
        assert!(Permission::ALL.iter().all(|p| admin.allows(*p)));
        let write = PermissionSet::parse_name("models:write").unwrap();
        assert!(write.allows(Permission::ModelsStart) && write.allows(Permission::ModelsStop));
        assert!(!write.allows(Permission::ModelsList));
        assert_eq!(write.names(), vec!["models:start", "models:stop"]);
        assert_eq!(PermissionSet::parse_name("models:fly"), None);
    }

    #[test]
    fn intersection_removes_admin_when_the_user_lost_it() {
        let token = PermissionSet::ALL;
        let user_now = PermissionSet::of(Permission::ModelsList);
        let effective = token.intersect(user_now);
        assert!(effective.allows(Permission::ModelsList));
        assert!(!effective.allows(Permission::ModelsRead));
    }
}
