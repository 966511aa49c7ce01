//! Interface-name rules, checked before anything reaches the kernel.

use crate::error::{Error, ErrorKind, Result};
use crate::sys::IFNAMSIZ;

/// Checks an interface name the way the kernel's `dev_valid_name` does, with a clear reason:
/// 1 to 15 bytes, not `.` or `..`, no `/`, `:`, NUL or whitespace. With `template`, one `%d`
/// is allowed (the kernel replaces it with the first free number).
///
/// # Errors
///
/// [`ErrorKind::InvalidInput`], naming the rule the name breaks.
pub fn validate(name: &str, template: bool) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::new(
            ErrorKind::InvalidInput,
            "invalid interface name",
            format!("{name:?}: {why}"),
        ))
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() >= IFNAMSIZ {
        return bad(&format!(
            "{} bytes long, the limit is {}",
            name.len(),
            IFNAMSIZ - 1
        ));
    }
    if name == "." || name == ".." {
        return bad("\".\" and \"..\" are not interface names");
    }
    if let Some(c) = name
        .chars()
        .find(|c| *c == '/' || *c == ':' || *c == '\0' || c.is_whitespace())
    {
        return bad(&format!("contains {c:?}"));
    }
    if let Some(pos) = name.find('%') {
        let rest = &name[pos..];
        if !template {
            return bad("'%' is only allowed in a template such as \"tun%d\"");
        }
        if !rest.starts_with("%d") || rest[2..].contains('%') {
            return bad("a template may hold one \"%d\" and no other '%'");
        }
    }
    Ok(())
}

/// Validates `name` as an existing interface's name (no template).
pub(crate) fn validate_existing(name: &str) -> Result<()> {
    validate(name, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_kernel_valid_names() {
        for ok in ["tun0", "a", "tap-lab.1_x", "123456789012345"] {
            assert!(validate(ok, false).is_ok(), "{ok}");
        }
        assert!(validate("tun%d", true).is_ok());
        assert!(validate("lab%dx", true).is_ok());
    }

    #[test]
    fn rejects_invalid_names_with_reason() {
        for bad in [
            "",
            "1234567890123456",
            ".",
            "..",
            "a/b",
            "a b",
            "a:b",
            "a\0b",
            "a\tb",
            "x%d",
        ] {
            let err = validate(bad, false).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad:?}");
        }
        for bad in ["%s", "a%d%d", "a%", "%x"] {
            assert!(validate(bad, true).is_err(), "{bad:?}");
        }
        let msg = validate("1234567890123456", false).unwrap_err().to_string();
        assert!(msg.contains("16 bytes"), "{msg}");
    }
}
