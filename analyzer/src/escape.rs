//! Escaping of attacker-controlled text (anything from inside a container:
//! process names, arguments, paths) for a terminal line: control characters,
//! C1 controls, Unicode bidi overrides and invisible formatting characters
//! become `\u{…}` escapes, so a container cannot rewrite the operator's screen
//! or forge extra lines.

use std::fmt::Write;

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

/// One field, escaped.
pub fn terminal(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => {
                // Writing to a String cannot fail.
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

/// An argument vector as a shell-like line: each argument escaped, and quoted
/// when it is empty or holds spaces or quotes, so argument boundaries stay visible.
pub fn argv<S: AsRef<str>>(args: &[S]) -> String {
    args.iter()
        .map(|a| {
            let a = a.as_ref();
            let e = terminal(a);
            if a.is_empty() || a.contains([' ', '"', '\'']) {
                format!("\"{}\"", e.replace('"', "\\\""))
            } else {
                e
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_bidi_are_escaped() {
        assert_eq!(terminal("cat"), "cat");
        assert_eq!(terminal("a\nFAKE LINE"), "a\\nFAKE LINE");
        assert_eq!(terminal("\u{1b}[2J"), "\\u{1b}[2J");
        assert_eq!(terminal("evil\u{202e}txt"), "evil\\u{202e}txt");
        assert_eq!(terminal("\u{85}"), "\\u{85}");
        assert_eq!(terminal("back\\slash"), "back\\\\slash");
        assert_eq!(terminal("ünïcødé ok"), "ünïcødé ok");
    }

    #[test]
    fn argv_keeps_boundaries() {
        let a = |v: &[&str]| argv(&v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
        assert_eq!(a(&["cat", "/etc/hostname"]), "cat /etc/hostname");
        assert_eq!(
            a(&["sh", "-c", "sleep 1; cat \"x\""]),
            "sh -c \"sleep 1; cat \\\"x\\\"\""
        );
        assert_eq!(a(&["echo", ""]), "echo \"\"");
        assert!(!a(&["x\ny"]).contains('\n'));
    }
}
