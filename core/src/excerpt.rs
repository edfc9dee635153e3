//! How error messages quote the input they reject: whole when short, cut at a character
//! boundary with "…" when long, so a megabyte of junk does not become a megabyte of message.

use crate::prelude::*;

/// `text`, or its first `max_chars` characters followed by "…".
pub(crate) fn excerpt(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        // `get`, not indexing: the cut is a character boundary anyway, and indexing would link
        // the string slicing panic (with char and range formatting) into the browser bundle.
        Some((cut, _)) => text!(text.get(..cut).unwrap_or_default(), '…'),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_cut_at_a_character_boundary() {
        assert_eq!(excerpt("short", 64), "short");
        assert_eq!(excerpt("ééééé", 3), "ééé…");
        assert_eq!(excerpt("abc", 3), "abc");
    }
}
