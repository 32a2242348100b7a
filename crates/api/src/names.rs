//! Names that become file paths or URL paths: model names, hub repository ids, quantizations and
//! the file names of a hub download. One set of rules, checked by the supervisor when a
//! registration arrives and again by the worker before it creates any file.
//!
//! A path-safe name is built from ASCII letters, digits, `.`, `_` and `-` only, so it can never
//! be absolute, never hold a separator, a drive letter, a NUL or a control character; `.` and
//! `..` are refused on top of that.

/// The longest model name (it becomes `<name>.json` and part of cache folder names).
pub const MAX_MODEL_NAME_LEN: usize = 200;

/// The longest hub file path accepted in a listing or a file-name template.
pub const MAX_HUB_PATH_LEN: usize = 512;

/// The longest username of the identity store.
pub const MAX_USERNAME_LEN: usize = 64;

/// Usernames of the identity store (and of single sign-on users): 1 to [`MAX_USERNAME_LEN`]
/// ASCII letters, digits, `.`, `_`, `-` or `@`, not starting with `-`. No `:`, so a name
/// like `provider:service` can never be a stored user's.
pub fn is_valid_username(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_USERNAME_LEN
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'))
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// Model names: start with a letter or a digit (upstream's documented rule, so no hidden
/// files), then letters, digits, `.`, `_`, `-`; at most [`MAX_MODEL_NAME_LEN`] characters.
/// Every built-in name (`qwen2.5-instruct`, `all-MiniLM-L6-v2`) fits.
pub fn is_valid_model_name(name: &str) -> bool {
    name.len() <= MAX_MODEL_NAME_LEN
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().all(is_name_char)
}

/// One path component: non-empty, not `.` or `..`, only letters, digits, `.`, `_`, `-`.
pub fn is_safe_component(part: &str) -> bool {
    !part.is_empty()
        && part != "."
        && part != ".."
        && part.len() <= MAX_MODEL_NAME_LEN
        && part.chars().all(is_name_char)
}

/// A relative path of safe components separated by `/` (hub files live in sub-folders, e.g.
/// `Q4_K_M/model-00001-of-00002.gguf` or `1_Pooling/config.json`).
pub fn is_safe_relative_path(path: &str) -> bool {
    path.len() <= MAX_HUB_PATH_LEN && path.split('/').all(is_safe_component)
}

/// A hub repository id: `owner/name`, both safe components.
pub fn is_hub_repo_id(repo: &str) -> bool {
    matches!(repo.split_once('/'), Some((owner, name)) if is_safe_component(owner) && is_safe_component(name))
}

/// A hub revision: a branch, tag or commit (branches may hold `/`).
pub fn is_hub_revision(revision: &str) -> bool {
    is_safe_relative_path(revision)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names() {
        for ok in [
            "qwen2.5-instruct",
            "all-MiniLM-L6-v2",
            "a",
            "9_b",
            "Llama-3.1-8B",
        ] {
            assert!(is_valid_model_name(ok), "{ok}");
        }
        let long = "a".repeat(MAX_MODEL_NAME_LEN + 1);
        for bad in [
            "",
            ".evil.json.tmp-1",
            "-x",
            "_x",
            "a/b",
            "a\\b",
            "a b",
            "a+b",
            "a\u{0}b",
            "é",
            "a:b",
            long.as_str(),
        ] {
            assert!(!is_valid_model_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn paths() {
        for ok in [
            "model.gguf",
            "Q4_K_M/m-00001-of-00002.gguf",
            "1_Pooling/config.json",
        ] {
            assert!(is_safe_relative_path(ok), "{ok}");
        }
        for bad in [
            "",
            "/tmp/x/pwned.txt",
            "../x",
            "a/../../x",
            "a//b",
            "./a",
            "a/",
            "C:\\x",
            "a\\..\\b",
            "x\u{0}",
            "..",
        ] {
            assert!(!is_safe_relative_path(bad), "{bad:?}");
        }
        assert!(is_safe_component("Q4_1") && !is_safe_component("Q4/1"));
        assert!(!is_safe_component("..") && !is_safe_component("."));
        assert!(is_hub_repo_id("HuggingFaceTB/SmolLM2-135M-Instruct"));
        for bad in ["noslash", "a/b/c", "../b", "a/..", "/a", "a/"] {
            assert!(!is_hub_repo_id(bad), "{bad:?}");
        }
    }
}
