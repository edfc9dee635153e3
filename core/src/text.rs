//! Texts written without `core::fmt`: every error message, reason and other string the core
//! puts together.
//!
//! Why by hand: the browser module carried `core::fmt`'s machinery (the formatter, padding,
//! integer printing, and the `Arguments` every `format!` and `write!` builds at its call site)
//! for texts that are only words, quoted input and whole numbers. Written piece by piece
//! (`text!`, `put!`), they leave it out of the module; `wasm-web/SIZE.md` has the figure.
//! Every error still implements `Display` and `Error` for Rust callers, with the same text
//! ([`described!`]).

use crate::prelude::*;

/// One piece of a text: words, a number, a quoted input.
pub trait Piece {
    /// Appends the piece to `out`.
    fn put(&self, out: &mut String);
}

impl Piece for str {
    fn put(&self, out: &mut String) {
        out.push_str(self);
    }
}

impl Piece for String {
    fn put(&self, out: &mut String) {
        out.push_str(self);
    }
}

impl Piece for char {
    fn put(&self, out: &mut String) {
        out.push(*self);
    }
}

impl<T: Piece + ?Sized> Piece for &T {
    fn put(&self, out: &mut String) {
        (**self).put(out);
    }
}

/// Whole numbers in decimal, as `{}` writes them.
macro_rules! decimal_pieces {
    ($($int:ty),+) => {$(
        impl Piece for $int {
            fn put(&self, out: &mut String) {
                put_decimal(u64::from(*self), out);
            }
        }
    )+};
}
decimal_pieces!(u8, u16, u32, u64);

impl Piece for usize {
    fn put(&self, out: &mut String) {
        // No target of the core has a `usize` wider than 64 bits.
        put_decimal(*self as u64, out);
    }
}

impl Piece for i64 {
    fn put(&self, out: &mut String) {
        if *self < 0 {
            out.push('-');
        }
        put_decimal(self.unsigned_abs(), out);
    }
}

/// Signed whole numbers narrower than `i64`, as `{}` writes them.
macro_rules! signed_pieces {
    ($($int:ty),+) => {$(
        impl Piece for $int {
            fn put(&self, out: &mut String) {
                i64::from(*self).put(out);
            }
        }
    )+};
}
signed_pieces!(i8, i16, i32);

impl Piece for isize {
    fn put(&self, out: &mut String) {
        // No target of the core has an `isize` wider than 64 bits.
        (*self as i64).put(out);
    }
}

fn put_decimal(mut value: u64, out: &mut String) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    for &digit in &digits[at..] {
        out.push(char::from(digit));
    }
}

/// A byte as `{:#04x}` writes it: `0x` and two lowercase hex digits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Hex(pub(crate) u8);

impl Piece for Hex {
    fn put(&self, out: &mut String) {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        out.push_str("0x");
        out.push(char::from(DIGITS[usize::from(self.0 >> 4)]));
        out.push(char::from(DIGITS[usize::from(self.0 & 0xf)]));
    }
}

/// A whole number with leading zeros up to `width` digits, as `{:0width$}` writes it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Zeros(pub(crate) u64, pub(crate) usize);

impl Piece for Zeros {
    fn put(&self, out: &mut String) {
        let start = out.len();
        put_decimal(self.0, out);
        let written = out.len() - start;
        for _ in written..self.1 {
            out.insert(start, '0');
        }
    }
}

/// Something with a text of its own: every error of the core.
pub trait Describe {
    /// Appends the text to `out`.
    fn describe(&self, out: &mut String);

    /// The text.
    fn text(&self) -> String {
        let mut out = String::new();
        self.describe(&mut out);
        out
    }
}

/// A text made of pieces ([`Piece`]): `text!("packet id ", id, " is unknown")`.
macro_rules! text {
    ($($piece:expr),+ $(,)?) => {{
        let mut out = $crate::prelude::String::new();
        $( $crate::text::Piece::put(&$piece, &mut out); )+
        out
    }};
}

/// Appends pieces to a `String`: `put!(out, "at byte ", position)`.
macro_rules! put {
    ($out:expr, $($piece:expr),+ $(,)?) => {{
        let out: &mut $crate::prelude::String = $out;
        $( $crate::text::Piece::put(&$piece, out); )+
    }};
}

/// `Display` (the same text as [`Describe`]), `Error` and [`Piece`] for each type named.
macro_rules! described {
    ($($error:ty),+ $(,)?) => {$(
        impl core::fmt::Display for $error {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.write_str(&$crate::text::Describe::text(self))
            }
        }

        impl core::error::Error for $error {}

        impl $crate::text::Piece for $error {
            fn put(&self, out: &mut $crate::prelude::String) {
                $crate::text::Describe::describe(self, out);
            }
        }
    )+};
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::format;

    #[test]
    fn numbers_read_as_format_writes_them() {
        for value in [0, 7, 10, 99, 65_535, u64::from(u32::MAX), u64::MAX] {
            assert_eq!(text!(value), format!("{value}"));
            assert_eq!(text!(Zeros(value, 4)), format!("{value:04}"));
        }
        for value in [0, -1, 42, i64::MIN, i64::MAX] {
            assert_eq!(text!(value), format!("{value}"));
        }
        for byte in [0u8, 0x0f, 0x82, 0xff] {
            assert_eq!(text!(Hex(byte)), format!("{byte:#04x}"));
        }
    }

    #[test]
    fn pieces_join_in_order() {
        let name = String::from("topic");
        let mut out = text!("a ", name, ' ', 3usize, " b");
        put!(&mut out, "; ", &name);
        assert_eq!(out, "a topic 3 b; topic");
    }
}
