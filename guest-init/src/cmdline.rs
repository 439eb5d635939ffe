//! The kernel command line, split into parameters the way the kernel itself splits it.
//!
//! Parameters with a dot in their name (`rkt.share=...`) are taken by the kernel as module
//! parameters: it neither handles them nor passes them to init's argv or environment. So
//! guest-init reads them back from /proc/cmdline, and must split that text exactly as the
//! kernel's `next_arg()` (lib/cmdline.c) does, or a quoted value would mean one thing to the
//! kernel and another to us:
//! - words are separated by unquoted white space;
//! - a double quote toggles "inside quotes" wherever it appears (single quotes are plain);
//! - in `name="value"` the quote opening the value and a quote ending the word are stripped;
//! - a word that starts with a quote loses that quote and a quote ending the word;
//! - `--` ends the kernel's parameters: what follows is init's argv, never parameters.

use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStringExt;

/// Where the running kernel shows the command line it was booted with.
pub const PROC_CMDLINE: &str = "/proc/cmdline";

/// One kernel parameter: `name` or `name=value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelParam {
    pub name: OsString,
    /// `None` for a bare word (`quiet`); `Some("")` for `name=`.
    pub value: Option<OsString>,
}

/// Reads the running kernel's command line.
pub fn read_proc_cmdline() -> io::Result<Vec<u8>> {
    std::fs::read(PROC_CMDLINE)
}

/// The kernel parameters of `cmdline`, in order, up to (not including) a `--` word.
pub fn kernel_params(cmdline: &[u8]) -> Vec<KernelParam> {
    let mut params = Vec::new();
    let mut rest = skip_spaces(cmdline);
    while !rest.is_empty() {
        let (word, after) = next_word(rest);
        rest = skip_spaces(after);
        if word.value.is_none() && word.name == b"--" {
            break;
        }
        params.push(KernelParam {
            name: OsString::from_vec(word.name),
            value: word.value.map(OsString::from_vec),
        });
    }
    params
}

/// The words after the first `--`: what the kernel hands init as argv[1..]. The kernel splits
/// them with the same rules and joins `name=value` words back together (`repair_env_string`),
/// so `a="b c"` becomes the argument `a=b c`.
pub fn init_args(cmdline: &[u8]) -> Vec<OsString> {
    let mut args = Vec::new();
    let mut after_dashes = false;
    let mut rest = skip_spaces(cmdline);
    while !rest.is_empty() {
        let (word, after) = next_word(rest);
        rest = skip_spaces(after);
        if after_dashes {
            let mut bytes = word.name;
            if let Some(value) = word.value {
                bytes.push(b'=');
                bytes.extend(value);
            }
            args.push(OsString::from_vec(bytes));
        } else if word.value.is_none() && word.name == b"--" {
            after_dashes = true;
        }
    }
    args
}

/// The value of the last parameter called `name` (the kernel, too, lets a later occurrence
/// override an earlier one). A bare word without `=` counts as an empty value.
pub fn last_value<'a>(params: &'a [KernelParam], name: &str) -> Option<&'a OsString> {
    const EMPTY: &OsString = &OsString::new();
    params
        .iter()
        .rev()
        .find(|param| param.name == name)
        .map(|param| param.value.as_ref().unwrap_or(EMPTY))
}

struct Word {
    name: Vec<u8>,
    value: Option<Vec<u8>>,
}

/// One word from the start of `text` (which starts with a non-space byte), and the text after
/// it. Mirrors the kernel's `next_arg()`, quirks included.
fn next_word(text: &[u8]) -> (Word, &[u8]) {
    let (text, mut in_quote, quoted) = match text.strip_prefix(b"\"") {
        Some(rest) => (rest, true, true),
        None => (text, false, false),
    };

    // The word's end and its first `=`. Like the kernel, an `=` at offset 0 does not count
    // as a separator (its marker for "none yet" is 0).
    let mut end = 0;
    let mut equals = None;
    while end < text.len() {
        let byte = text[end];
        if is_space(byte) && !in_quote {
            break;
        }
        if equals.is_none() && byte == b'=' && end > 0 {
            equals = Some(end);
        }
        if byte == b'"' {
            in_quote = !in_quote;
        }
        end += 1;
    }
    let word = &text[..end];
    let after = text.get(end + 1..).unwrap_or_default();

    // The kernel drops the word's last byte when it is a quote and the word or its value was
    // opened with a quote (both rules hit that same byte, so it goes at most once).
    let value_opens_with_quote = equals.is_some_and(|at| word.get(at + 1) == Some(&b'"'));
    let strip_closing_quote = word.last() == Some(&b'"') && (quoted || value_opens_with_quote);
    let word = if strip_closing_quote {
        &word[..word.len() - 1]
    } else {
        word
    };

    let parsed = match equals {
        None => Word {
            name: word.to_vec(),
            value: None,
        },
        Some(at) => {
            // `at` is below the word's original last byte, so still inside the trimmed word.
            let value = &word[at + 1..];
            let value = if value_opens_with_quote {
                value.get(1..).unwrap_or_default()
            } else {
                value
            };
            Word {
                name: word[..at].to_vec(),
                value: Some(value.to_vec()),
            }
        }
    };
    (parsed, after)
}

fn skip_spaces(text: &[u8]) -> &[u8] {
    let start = text
        .iter()
        .position(|&byte| !is_space(byte))
        .unwrap_or(text.len());
    &text[start..]
}

/// The kernel's `isspace()` (lib/ctype.c): the ASCII white space characters plus 0xA0, which
/// its Latin-1 table also marks as a space.
fn is_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | 0xa0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(text: &str) -> Vec<(String, Option<String>)> {
        kernel_params(text.as_bytes())
            .into_iter()
            .map(|p| {
                (
                    p.name.to_string_lossy().into_owned(),
                    p.value.map(|v| v.to_string_lossy().into_owned()),
                )
            })
            .collect()
    }

    fn named(name: &str, value: Option<&str>) -> (String, Option<String>) {
        (name.to_owned(), value.map(str::to_owned))
    }

    #[test]
    fn splits_words_and_values() {
        assert_eq!(
            params("console=ttyS0 reboot=k quiet rkt.share=pod\n"),
            vec![
                named("console", Some("ttyS0")),
                named("reboot", Some("k")),
                named("quiet", None),
                named("rkt.share", Some("pod")),
            ]
        );
    }

    #[test]
    fn stops_at_the_double_dash() {
        assert_eq!(
            params(r#"quiet rkt.share=a -- /bin/sh -c "echo rkt.share=b""#),
            vec![named("quiet", None), named("rkt.share", Some("a"))]
        );
        // `--=x` is a parameter, not the separator.
        assert_eq!(
            params("--=x y"),
            vec![named("--", Some("x")), named("y", None)]
        );
    }

    #[test]
    fn quoted_values_keep_their_spaces_and_lose_their_quotes() {
        assert_eq!(
            params(r#"rkt.root="my root" next"#),
            vec![named("rkt.root", Some("my root")), named("next", None)]
        );
        // The whole word quoted, as some boot loaders write it.
        assert_eq!(
            params(r#""rkt.root=my root" next"#),
            vec![named("rkt.root", Some("my root")), named("next", None)]
        );
        assert_eq!(params(r#""quiet""#), vec![named("quiet", None)]);
    }

    #[test]
    fn quotes_inside_a_word_stay_as_the_kernel_leaves_them() {
        // The quote toggles quoting but is kept when it does not open the value.
        assert_eq!(
            params(r#"a=b"c d" e"#),
            vec![named("a", Some(r#"b"c d""#)), named("e", None)]
        );
        // An opening quote with no closing one: the rest of the line is the value.
        assert_eq!(params(r#"a="b c d"#), vec![named("a", Some("b c d"))]);
    }

    #[test]
    fn single_quotes_are_plain_characters() {
        assert_eq!(
            params("a='b c'"),
            vec![named("a", Some("'b")), named("c'", None)]
        );
    }

    #[test]
    fn white_space_of_every_kind_separates() {
        assert_eq!(
            params("  a=1\tb=2\n\nc  "),
            vec![
                named("a", Some("1")),
                named("b", Some("2")),
                named("c", None)
            ]
        );
        assert!(params("").is_empty());
        assert!(params(" \n").is_empty());
    }

    #[test]
    fn empty_values_and_leading_equals() {
        assert_eq!(params("a= b"), vec![named("a", Some("")), named("b", None)]);
        assert_eq!(params(r#"a="""#), vec![named("a", Some(""))]);
        // The kernel does not split at an `=` in the first position.
        assert_eq!(params("=x"), vec![named("=x", None)]);
        assert_eq!(params("a=b=c"), vec![named("a", Some("b=c"))]);
    }

    #[test]
    fn later_occurrences_win() {
        let params = kernel_params(b"rkt.share=a quiet rkt.share=b rkt.root");
        assert_eq!(
            last_value(&params, "rkt.share").map(|v| v.as_os_str()),
            Some("b".as_ref())
        );
        assert_eq!(
            last_value(&params, "rkt.root").map(|v| v.as_os_str()),
            Some("".as_ref())
        );
        assert_eq!(last_value(&params, "rkt.status"), None);
    }

    #[test]
    fn any_input_is_split_without_panicking() {
        // Every short string over the alphabet that matters to the splitter.
        let alphabet = [b'a', b'=', b'"', b' ', b'-', 0xa0];
        let mut word = Vec::new();
        for mut n in 0..6usize.pow(6) {
            word.clear();
            while n > 0 {
                word.push(alphabet[n % 6]);
                n /= 6;
            }
            let params = kernel_params(&word);
            assert!(params.len() <= word.len());
        }
    }

    #[test]
    fn non_utf8_bytes_survive() {
        let params = kernel_params(b"rkt.root=r\xff");
        assert_eq!(params[0].value, Some(OsString::from_vec(vec![b'r', 0xff])));
    }

    #[test]
    fn init_args_are_the_words_after_dashes_as_the_kernel_gives_them() {
        let args = init_args(br#"quiet rkt.share=pod -- /bin/sh -c "echo hi; exit 3" a="b c" --"#);
        let args: Vec<_> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            vec!["/bin/sh", "-c", "echo hi; exit 3", "a=b c", "--"]
        );
        assert!(init_args(b"quiet rkt.warm=1").is_empty());
    }
}
