//! What a reaction may be: one emoji, as Signal and WhatsApp offer them
//! (docs/E2EE.md §3.2). No emoji data crate is available to this build, so
//! the rule is the shape of an emoji sequence from Unicode Technical
//! Standard #51 (§1.4.9, "emoji sequences"), with the pictographic code
//! point ranges of its `Extended_Pictographic` property written out:
//!
//! * a **keycap**: `0`–`9`, `#` or `*`, an optional U+FE0F, then U+20E3;
//! * a **flag**: exactly two regional indicators (U+1F1E6–U+1F1FF);
//! * a **tag sequence**: U+1F3F4 (black flag), tags U+E0020–U+E007E, and
//!   the cancel tag U+E007F (subdivision flags such as Scotland's);
//! * otherwise one or more **elements joined by U+200D** (zero-width
//!   joiner), each a pictographic code point ([`is_pictographic`]) followed
//!   by at most one variation selector (U+FE0E or U+FE0F) and at most one
//!   skin-tone modifier (U+1F3FB–U+1F3FF).
//!
//! Letters, digits alone, punctuation, spaces and two emoji side by side
//! are refused. The rule accepts some sequences no vendor draws (any two
//! pictographs joined by U+200D): those show as their parts, as on every
//! platform, and stay one reaction.

/// Whether `text` is exactly one emoji by the rule in the module docs.
pub fn is_one_emoji(text: &str) -> bool {
    let chars: Vec<char> = text.chars().collect();
    match chars.as_slice() {
        [] => false,
        [key, '\u{20E3}'] | [key, '\u{FE0F}', '\u{20E3}'] => matches!(key, '0'..='9' | '#' | '*'),
        [a, b] if is_regional(*a) && is_regional(*b) => true,
        ['\u{1F3F4}', tags @ .., '\u{E007F}'] if !tags.is_empty() => {
            tags.iter().all(|c| ('\u{E0020}'..='\u{E007E}').contains(c))
        }
        _ => chars.split(|c| *c == '\u{200D}').all(is_element),
    }
}

/// One element of a ZWJ sequence: a pictograph, an optional variation
/// selector, an optional skin-tone modifier.
fn is_element(element: &[char]) -> bool {
    let Some((base, rest)) = element.split_first() else {
        return false;
    };
    if !is_pictographic(*base) {
        return false;
    }
    let rest = match rest.first() {
        Some('\u{FE0E}' | '\u{FE0F}') => rest.get(1..).unwrap_or_default(),
        _ => rest,
    };
    match rest {
        [] => true,
        [modifier] => is_skin_tone(*modifier),
        _ => false,
    }
}

fn is_regional(c: char) -> bool {
    ('\u{1F1E6}'..='\u{1F1FF}').contains(&c)
}

fn is_skin_tone(c: char) -> bool {
    ('\u{1F3FB}'..='\u{1F3FF}').contains(&c)
}

/// The `Extended_Pictographic` code points (Unicode 15.1 emoji-data.txt,
/// merged into ranges) outside the ASCII and Latin-1 letters, plus the
/// skin-tone modifiers shown alone; regional indicators are flags only.
pub fn is_pictographic(c: char) -> bool {
    const RANGES: [(char, char); 32] = [
        ('\u{00A9}', '\u{00A9}'),
        ('\u{00AE}', '\u{00AE}'),
        ('\u{203C}', '\u{203C}'),
        ('\u{2049}', '\u{2049}'),
        ('\u{2122}', '\u{2122}'),
        ('\u{2139}', '\u{2139}'),
        ('\u{2194}', '\u{2199}'),
        ('\u{21A9}', '\u{21AA}'),
        ('\u{231A}', '\u{231B}'),
        ('\u{2328}', '\u{2328}'),
        ('\u{2388}', '\u{2388}'),
        ('\u{23CF}', '\u{23CF}'),
        ('\u{23E9}', '\u{23F3}'),
        ('\u{23F8}', '\u{23FA}'),
        ('\u{24C2}', '\u{24C2}'),
        ('\u{25AA}', '\u{25AB}'),
        ('\u{25B6}', '\u{25B6}'),
        ('\u{25C0}', '\u{25C0}'),
        ('\u{25FB}', '\u{25FE}'),
        ('\u{2600}', '\u{27BF}'),
        ('\u{2934}', '\u{2935}'),
        ('\u{2B05}', '\u{2B07}'),
        ('\u{2B1B}', '\u{2B1C}'),
        ('\u{2B50}', '\u{2B50}'),
        ('\u{2B55}', '\u{2B55}'),
        ('\u{3030}', '\u{3030}'),
        ('\u{303D}', '\u{303D}'),
        ('\u{3297}', '\u{3297}'),
        ('\u{3299}', '\u{3299}'),
        ('\u{1F000}', '\u{1F1E5}'),
        ('\u{1F200}', '\u{1FAFF}'),
        ('\u{1FC00}', '\u{1FFFD}'),
    ];
    RANGES.iter().any(|(low, high)| (*low..=*high).contains(&c))
}

#[cfg(test)]
mod tests {
    use super::is_one_emoji;

    #[test]
    fn single_emoji_of_every_shape_are_accepted() {
        for emoji in [
            "👍",
            "❤️",
            "❤",
            "👍🏽",
            "👩‍💻",
            "👨‍👩‍👧‍👦",
            "🏳️‍🌈",
            "🇫🇷",
            "1️⃣",
            "#⃣",
            "🏴\u{E0067}\u{E0062}\u{E0073}\u{E0063}\u{E0074}\u{E007F}",
            "©️",
            "☕",
            "🫠",
        ] {
            assert!(is_one_emoji(emoji), "{emoji:?} is one emoji");
        }
    }

    #[test]
    fn text_and_several_emoji_are_refused() {
        for text in [
            "",
            "lol",
            "a",
            "1",
            "#",
            " ",
            "👍👍",
            "👍 ",
            " 👍",
            "🇫",
            "🇫🇷🇩🇪",
            "👍\u{200D}",
            "\u{200D}👍",
            "👍🏽🏽",
            "x\u{20E3}",
            "🏴\u{E007F}",
            "<script>",
            "\u{FE0F}",
            "🏻a",
        ] {
            assert!(!is_one_emoji(text), "{text:?} is not one emoji");
        }
    }
}
