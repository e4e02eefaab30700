//! ISO 3166-1 alpha-2 country codes, and the EU and EEA membership lists the derivation
//! rules use. Both lists live here and nowhere else.

use crate::RegistryError;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The 249 officially assigned ISO 3166-1 alpha-2 codes (Debian iso-codes 4.x,
/// `iso_3166-1.json`), sorted. User-assigned and reserved codes (`XK`, `EU`, `ZZ`,
/// `UK`) are refused: a registry names countries, not groupings.
const ASSIGNED: [&str; 249] = [
    "AD", "AE", "AF", "AG", "AI", "AL", "AM", "AO", "AQ", "AR", "AS", "AT", "AU", "AW", "AX", "AZ", "BA",
    "BB", "BD", "BE", "BF", "BG", "BH", "BI", "BJ", "BL", "BM", "BN", "BO", "BQ", "BR", "BS", "BT", "BV",
    "BW", "BY", "BZ", "CA", "CC", "CD", "CF", "CG", "CH", "CI", "CK", "CL", "CM", "CN", "CO", "CR", "CU",
    "CV", "CW", "CX", "CY", "CZ", "DE", "DJ", "DK", "DM", "DO", "DZ", "EC", "EE", "EG", "EH", "ER", "ES",
    "ET", "FI", "FJ", "FK", "FM", "FO", "FR", "GA", "GB", "GD", "GE", "GF", "GG", "GH", "GI", "GL", "GM",
    "GN", "GP", "GQ", "GR", "GS", "GT", "GU", "GW", "GY", "HK", "HM", "HN", "HR", "HT", "HU", "ID", "IE",
    "IL", "IM", "IN", "IO", "IQ", "IR", "IS", "IT", "JE", "JM", "JO", "JP", "KE", "KG", "KH", "KI", "KM",
    "KN", "KP", "KR", "KW", "KY", "KZ", "LA", "LB", "LC", "LI", "LK", "LR", "LS", "LT", "LU", "LV", "LY",
    "MA", "MC", "MD", "ME", "MF", "MG", "MH", "MK", "ML", "MM", "MN", "MO", "MP", "MQ", "MR", "MS", "MT",
    "MU", "MV", "MW", "MX", "MY", "MZ", "NA", "NC", "NE", "NF", "NG", "NI", "NL", "NO", "NP", "NR", "NU",
    "NZ", "OM", "PA", "PE", "PF", "PG", "PH", "PK", "PL", "PM", "PN", "PR", "PS", "PT", "PW", "PY", "QA",
    "RE", "RO", "RS", "RU", "RW", "SA", "SB", "SC", "SD", "SE", "SG", "SH", "SI", "SJ", "SK", "SL", "SM",
    "SN", "SO", "SR", "SS", "ST", "SV", "SX", "SY", "SZ", "TC", "TD", "TF", "TG", "TH", "TJ", "TK", "TL",
    "TM", "TN", "TO", "TR", "TT", "TV", "TW", "TZ", "UA", "UG", "UM", "US", "UY", "UZ", "VA", "VC", "VE",
    "VG", "VI", "VN", "VU", "WF", "WS", "YE", "YT", "ZA", "ZM", "ZW",
];

/// The 27 EU member states (since 1 February 2020). Greece is `GR` in ISO 3166-1 (the
/// EU's own `EL` is not an ISO code). Update with the treaties, nowhere else.
pub const EU_MEMBERS: [&str; 27] = [
    "AT", "BE", "BG", "CY", "CZ", "DE", "DK", "EE", "ES", "FI", "FR", "GR", "HR", "HU", "IE", "IT", "LT",
    "LU", "LV", "MT", "NL", "PL", "PT", "RO", "SE", "SI", "SK",
];

/// EEA members outside the EU (EEA Agreement): for SecNumCloud 19.6, holders with their
/// registered office here count as EU/EEA holders.
pub const EEA_NON_EU: [&str; 3] = ["IS", "LI", "NO"];

/// An ISO 3166-1 alpha-2 code, validated on construction and on decoding.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Country(String);

impl Country {
    /// An assigned code, two uppercase letters; anything else is refused (no case folding).
    pub fn new(code: &str) -> Result<Self, RegistryError> {
        if ASSIGNED.binary_search(&code).is_ok() {
            Ok(Self(code.to_owned()))
        } else {
            Err(RegistryError::Country(code.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// An EU member state.
    pub fn is_eu(&self) -> bool {
        EU_MEMBERS.contains(&self.0.as_str())
    }

    /// An EU member state or an EEA country.
    pub fn is_eu_eea(&self) -> bool {
        self.is_eu() || EEA_NON_EU.contains(&self.0.as_str())
    }

    pub fn is_us(&self) -> bool {
        self.0 == "US"
    }
}

impl TryFrom<String> for Country {
    type Error = RegistryError;
    fn try_from(s: String) -> Result<Self, RegistryError> {
        Self::new(&s)
    }
}

impl From<Country> for String {
    fn from(c: Country) -> String {
        c.0
    }
}

impl fmt::Display for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_sorted_and_assigned() {
        assert!(ASSIGNED.windows(2).all(|w| w[0] < w[1]));
        for c in EU_MEMBERS.iter().chain(EEA_NON_EU.iter()) {
            assert!(Country::new(c).is_ok(), "{c}");
        }
    }

    #[test]
    fn codes() {
        assert!(Country::new("FR").unwrap().is_eu());
        assert!(Country::new("NO").unwrap().is_eu_eea());
        assert!(!Country::new("NO").unwrap().is_eu());
        assert!(!Country::new("CH").unwrap().is_eu_eea());
        for bad in ["fr", "F", "FRA", "EU", "ZZ", "UK", "", "É"] {
            assert_eq!(
                Country::new(bad),
                Err(RegistryError::Country(bad.into())),
                "{bad}"
            );
        }
    }
}
