//! Ids: the stable, bounded slugs that name cameras and prompts in MQTT topics, Home Assistant
//! unique ids, event ids and URLs.

/// The longest camera or prompt id: ids end up in MQTT topics, Home Assistant unique ids and
/// event ids, which must stay short whatever the text.
pub const ID_MAX: usize = 64;

/// A camera's or prompt's id: its [`slug`] when that is non-empty and at most [`ID_MAX`] bytes
/// (so ASCII ids, and the Home Assistant unique ids built from them, stay what they always
/// were); a longer slug is cut and gets `_` and 8 hex digits of the text's SHA-256; a text with
/// nothing ASCII to keep (`猫`, `犬`) gets `id_` and those 8 hex digits, so different texts get
/// different ids.
pub fn make_id(text: &str) -> String {
    use sha2::Digest;
    let slug = slug(text);
    if !slug.is_empty() && slug.len() <= ID_MAX {
        return slug;
    }
    let digest = sha2::Sha256::digest(text.as_bytes());
    let hash: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    if slug.is_empty() {
        return format!("id_{hash}");
    }
    let cut = slug[..ID_MAX - hash.len() - 1].trim_end_matches('_');
    format!("{cut}_{hash}")
}

/// Lower-case words joined by dashes: a stable id for topics and unique ids.
pub fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('_') && !out.is_empty() {
            out.push('_');
        }
    }
    out.trim_end_matches('_').to_string()
}
