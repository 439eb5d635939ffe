//! Escaping text from images before it reaches a terminal.
//!
//! An image's name, labels, annotations, tags and paths are chosen by its
//! publisher. Printed raw, a newline forges a line of `rkt image list`, an
//! `ESC [2J` clears the screen, an OSC sequence retitles the window or
//! (on some terminals) writes to the clipboard, and a bidi override makes
//! text read backwards. So everything stage0 prints that an image controls
//! goes through [`escape`], which keeps printable text as it is and shows
//! the rest as visible escapes. JSON output needs none of this: serde_json
//! escapes control characters itself.

use std::borrow::Cow;
use std::fmt::Write;

/// `text` with every character a terminal would act on shown as an escape:
/// C0 controls and DEL as `\n`, `\r`, `\t` or `\xNN`; C1 controls and the
/// bidi embedding/override/isolate characters as `\u{NNNN}`. (A backslash
/// is left as it is: error lines quote Rust's own `\u{..}` escapes.)
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                // Writing into a String cannot fail.
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:04x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c.is_control() // C0, DEL and C1
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// JSON text (as serde_json writes it, or as an image stored it) made safe
/// for a terminal while staying the same JSON: serde_json escapes C0
/// controls but leaves DEL, C1 controls and bidi overrides raw, and those
/// can only occur inside strings, where `\uNNNN` means the same character.
pub fn escape_json(json: &str) -> Cow<'_, str> {
    let raw = |c: char| c != '\n' && c != '\r' && c != '\t' && needs_escape(c);
    if !json.chars().any(raw) {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 8);
    for c in json.chars() {
        if raw(c) {
            // Writing into a String cannot fail.
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        let text = "example.com/app:1.0 ünïcode ✓";
        assert!(matches!(escape(text), Cow::Borrowed(t) if t == text));
    }

    #[test]
    fn controls_become_visible_escapes() {
        assert_eq!(
            escape("a\nb\rc\td\u{1b}[2J\u{7}\u{7f}\u{0}"),
            "a\\nb\\rc\\td\\x1b[2J\\x07\\x7f\\x00"
        );
        // C1 (CSI as one character) and bidi overrides.
        assert_eq!(escape("x\u{9b}2Jy"), "x\\u{009b}2Jy");
        assert_eq!(escape("abc\u{202e}fed"), "abc\\u{202e}fed");
        for c in (0u32..0x110000).filter_map(char::from_u32) {
            let shown = escape(&c.to_string()).into_owned();
            assert!(
                !shown.chars().any(|s| s.is_control()),
                "U+{:04X} -> {shown:?}",
                c as u32
            );
        }
    }

    #[test]
    fn json_stays_json() {
        let value = serde_json::json!({"name": "a\u{1b}[2J\u{9b}\u{202e}\u{7f}b\n"});
        let text = serde_json::to_string(&value).unwrap();
        let shown = escape_json(&text);
        assert!(!shown.chars().any(needs_escape), "{shown}");
        let back: serde_json::Value = serde_json::from_str(&shown).unwrap();
        assert_eq!(back, value);
    }
}
