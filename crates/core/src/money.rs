//! Exact money: integer minor units and an ISO 4217 code. Never floats in stored money.

/// Minor-unit exponent of an ISO 4217 currency. Codes not listed use 2 (most currencies);
/// the listed exceptions are the zero- and three-decimal currencies.
pub fn exponent(currency: &str) -> u32 {
    match currency {
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX" | "UYI" | "VND"
        | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        _ => 2,
    }
}

/// Trims and upper-cases; must be three ASCII letters.
pub fn parse_currency(s: &str) -> Result<String, String> {
    let c = s.trim().to_ascii_uppercase();
    if c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(c)
    } else {
        Err(format!("'{}' is not a three-letter ISO 4217 currency code", s.trim()))
    }
}

/// Parses a decimal string in major units (`12.50`) into minor units, exactly.
/// More decimals than the currency has is an error, not a rounding.
pub fn parse_amount(s: &str, currency: &str) -> Result<i64, String> {
    let t = s.trim();
    let exp = exponent(currency);
    let (neg, digits) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !all_digits(whole) || !all_digits(frac) || (digits.contains('.') && frac.is_empty()) {
        return Err(format!("'{t}' is not a decimal amount like 12.50"));
    }
    if frac.len() as u32 > exp {
        return Err(format!("'{t}' has more than {exp} decimals for {currency}"));
    }
    let scale = 10i64.pow(exp);
    let too_big = || format!("'{t}' is too large");
    let w: i64 = whole.parse().map_err(|_| too_big())?;
    let f: i64 = if frac.is_empty() {
        0
    } else {
        frac.parse::<i64>().map_err(|_| too_big())? * 10i64.pow(exp - frac.len() as u32)
    };
    let minor = w
        .checked_mul(scale)
        .and_then(|v| v.checked_add(f))
        .ok_or_else(too_big)?;
    Ok(if neg { -minor } else { minor })
}

/// Minor units of `currency` as micro-units (six decimals), the unit features sum in so
/// that totals stay exact integers whatever the currency's exponent. Widened to i128: any
/// i64 amount, even one stored before ingest bounded amounts, converts without overflow.
pub fn to_micros(minor: i64, currency: &str) -> i128 {
    i128::from(minor) * 10i128.pow(6 - exponent(currency))
}

/// Formats minor units back to a decimal string in major units.
pub fn format_amount(minor: i64, currency: &str) -> String {
    let exp = exponent(currency);
    if exp == 0 {
        return minor.to_string();
    }
    let scale = 10i64.pow(exp);
    let sign = if minor < 0 { "-" } else { "" };
    let a = minor.unsigned_abs();
    format!(
        "{sign}{}.{:0width$}",
        a / scale as u64,
        a % scale as u64,
        width = exp as usize
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_parse_exactly() {
        assert_eq!(parse_amount("12.50", "USD"), Ok(1250));
        assert_eq!(parse_amount("12.5", "USD"), Ok(1250));
        assert_eq!(parse_amount("12", "USD"), Ok(1200));
        assert_eq!(parse_amount(" 0.07 ", "EUR"), Ok(7));
        assert_eq!(parse_amount("-3.10", "USD"), Ok(-310));
        assert_eq!(parse_amount("1500", "JPY"), Ok(1500));
        assert_eq!(parse_amount("1.234", "KWD"), Ok(1234));
        for bad in [
            "",
            "abc",
            "1,50",
            "1.2.3",
            "1e3",
            "12.",
            ".5",
            "1.505",
            "99999999999999999999",
        ] {
            assert!(parse_amount(bad, "USD").is_err(), "{bad} accepted");
        }
        assert!(parse_amount("1.5", "JPY").is_err());
    }

    #[test]
    fn format_round_trips() {
        for (minor, cur) in [(1250, "USD"), (-5, "EUR"), (1500, "JPY"), (1234, "KWD"), (0, "USD")] {
            assert_eq!(parse_amount(&format_amount(minor, cur), cur), Ok(minor));
        }
    }

    #[test]
    fn micros_never_overflow() {
        assert_eq!(to_micros(1250, "USD"), 12_500_000);
        assert_eq!(to_micros(1500, "JPY"), 1_500_000_000);
        assert_eq!(to_micros(1234, "KWD"), 1_234_000);
        assert_eq!(to_micros(i64::MAX, "JPY"), i128::from(i64::MAX) * 1_000_000);
        assert_eq!(to_micros(i64::MIN, "JPY"), i128::from(i64::MIN) * 1_000_000);
    }

    #[test]
    fn currency_codes() {
        assert_eq!(parse_currency(" usd "), Ok("USD".into()));
        assert!(parse_currency("US").is_err());
        assert!(parse_currency("U5D").is_err());
    }
}
