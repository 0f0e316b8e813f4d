//! Code-object selection: a `hip:` variant runs on a device whose gfx name matches and whose
//! features (`xnack`, `sramecc`) agree with every feature the variant was compiled with; a
//! variant that leaves a feature unspecified runs either way. More specific variants win.

use crate::cpu::features::Rank;

/// Target features named with their setting: `[("xnack", true)]` for `:xnack+`.
pub type Features<'a> = Vec<(&'a str, bool)>;

/// `gfx90a:xnack+` -> ("gfx90a", [("xnack", true)]).
pub fn parse(arch: &str) -> Result<(&str, Features<'_>), String> {
    let mut parts = arch.split(':');
    let gfx = parts.next().unwrap_or_default();
    if !gfx.starts_with("gfx") || gfx.len() < 6 {
        return Err(format!(
            "`{arch}` is not an AMD target (gfx<NNN>[:feature±])"
        ));
    }
    let mut feats = Vec::new();
    for p in parts {
        let f = match (p.strip_suffix('+'), p.strip_suffix('-')) {
            (Some(n), _) => (n, true),
            (_, Some(n)) => (n, false),
            _ => return Err(format!("`{arch}`: feature `{p}` needs a + or - suffix")),
        };
        feats.push(f);
    }
    Ok((gfx, feats))
}

/// The gfx name of a `gfx_target_version` (major * 10000 + minor * 100 + stepping):
/// 110000 -> gfx1100, 90010 -> gfx90a, 90402 -> gfx942.
pub fn gfx_name(version: u32) -> String {
    let (major, minor, step) = (version / 10000, version / 100 % 100, version % 100);
    format!("gfx{major}{minor}{step:x}")
}

/// Whether a device named `device` (`gfx90a:sramecc+:xnack-`) runs `arch`'s code object.
pub fn support(arch: &str, device: &str) -> Result<Rank, String> {
    let (want, want_feats) = parse(arch)?;
    let (have, have_feats) = parse(device)?;
    if want != have {
        return Err(format!("is code for {want}; this GPU is {have}"));
    }
    for (name, on) in &want_feats {
        let dev = have_feats.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
        if dev.is_some_and(|d| d != *on) {
            let sign = |b: bool| if b { '+' } else { '-' };
            return Err(format!(
                "was compiled with {name}{}; this GPU runs with {name}{}",
                sign(*on),
                sign(!*on)
            ));
        }
    }
    Ok(Rank {
        level: 100,
        extra: want_feats.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_name_gfx_targets() {
        assert_eq!(gfx_name(110000), "gfx1100");
        assert_eq!(gfx_name(110001), "gfx1101");
        assert_eq!(gfx_name(90010), "gfx90a");
        assert_eq!(gfx_name(90402), "gfx942");
        assert_eq!(gfx_name(90006), "gfx906");
        assert_eq!(gfx_name(120001), "gfx1201");
    }

    #[test]
    fn the_gfx_name_must_match() {
        assert!(support("gfx1100", "gfx1100").is_ok());
        let e = support("gfx1100", "gfx1101").unwrap_err();
        assert!(e.contains("gfx1101"), "{e}");
    }

    #[test]
    fn features_must_agree_where_the_variant_names_them() {
        let dev = "gfx90a:sramecc+:xnack-";
        assert!(support("gfx90a", dev).is_ok());
        assert!(support("gfx90a:xnack-", dev).is_ok());
        let e = support("gfx90a:xnack+", dev).unwrap_err();
        assert!(e.contains("xnack+") && e.contains("xnack-"), "{e}");
        // The more specific variant ranks higher.
        assert!(support("gfx90a:xnack-:sramecc+", dev).unwrap() > support("gfx90a", dev).unwrap());
        assert!(parse("gfx90a:xnack").is_err());
    }
}
