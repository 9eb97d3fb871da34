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

/// Most bytes of one container-supplied value (a field, or a whole argument
/// vector) a line shows; the rest is replaced by `…[truncated N bytes]`, so
/// a few hostile messages cannot write gigabytes to a terminal or a log.
pub const MAX_FIELD: usize = 4096;

/// The longest prefix of `s` of at most `max` bytes that ends on a
/// character boundary.
fn prefix(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn escape_into(out: &mut String, s: &str) {
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
}

/// One field, escaped, and cut after [`MAX_FIELD`] bytes.
pub fn terminal(s: &str) -> String {
    let shown = prefix(s, MAX_FIELD);
    let mut out = String::with_capacity(shown.len());
    escape_into(&mut out, shown);
    if shown.len() < s.len() {
        out.push_str(&crate::ocsf::truncation_marker(s.len() - shown.len()));
    }
    out
}

/// An argument vector as a shell-like line: each argument escaped, and quoted
/// when it is empty or holds spaces or quotes, so argument boundaries stay
/// visible. The arguments joined by spaces count as one value: what is past
/// [`MAX_FIELD`] bytes is cut.
pub fn argv<S: AsRef<str>>(args: &[S]) -> String {
    let total = args
        .iter()
        .map(|a| a.as_ref().len() + 1)
        .sum::<usize>()
        .saturating_sub(1);
    let mut out = String::new();
    let mut shown = 0;
    for (i, a) in args.iter().enumerate() {
        let a = a.as_ref();
        if i > 0 {
            if shown >= MAX_FIELD {
                break;
            }
            out.push(' ');
            shown += 1;
        }
        let part = prefix(a, MAX_FIELD - shown);
        shown += part.len();
        let mut e = String::with_capacity(part.len());
        escape_into(&mut e, part);
        if a.is_empty() || part.contains([' ', '"', '\'']) {
            out.push('"');
            out.push_str(&e.replace('"', "\\\""));
            out.push('"');
        } else {
            out.push_str(&e);
        }
        if part.len() < a.len() {
            break;
        }
    }
    if shown < total {
        out.push_str(&crate::ocsf::truncation_marker(total - shown));
    }
    out
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

    #[test]
    fn long_values_are_cut_one_byte_over_the_bound() {
        let at = "a".repeat(MAX_FIELD);
        assert_eq!(terminal(&at), at);
        let over = "a".repeat(MAX_FIELD + 1);
        assert_eq!(terminal(&over), format!("{at}…[truncated 1 bytes]"));
        assert!(terminal(&"\u{1b}".repeat(1 << 20)).ends_with("…[truncated 1044480 bytes]"));
        // An argument vector counts as one value, separators included.
        let half = "b".repeat(MAX_FIELD / 2);
        let exactly = [half.clone(), "c".repeat(MAX_FIELD / 2 - 1)];
        assert_eq!(argv(&exactly), exactly.join(" "));
        let one_over = [half.clone(), "c".repeat(MAX_FIELD / 2)];
        let line = argv(&one_over);
        assert!(line.ends_with("c…[truncated 1 bytes]"), "{}", &line[line.len() - 30..]);
        let many: Vec<String> = (0..100_000).map(|_| "x".to_owned()).collect();
        let line = argv(&many);
        assert!(
            line.len() < MAX_FIELD + 40 && line.ends_with("…[truncated 195903 bytes]"),
            "{}",
            &line[line.len() - 30..]
        );
    }
}
