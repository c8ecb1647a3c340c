//! Parsing Amazon ECR registry hosts: private registries and ECR Public.
//!
//! Pure functions: no I/O. A host is accepted only when it has exactly the shape ECR uses, so a
//! look-alike (`…amazonaws.com.evil.example`) never receives a token.

use std::fmt;

/// An AWS partition, derived from the registry's domain (and, for GovCloud, its region).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Partition {
    Aws,
    AwsCn,
    AwsUsGov,
    AwsIso,
    AwsIsoB,
    AwsIsoE,
    AwsIsoF,
    AwsEusc,
}

impl Partition {
    pub fn as_str(self) -> &'static str {
        match self {
            Partition::Aws => "aws",
            Partition::AwsCn => "aws-cn",
            Partition::AwsUsGov => "aws-us-gov",
            Partition::AwsIso => "aws-iso",
            Partition::AwsIsoB => "aws-iso-b",
            Partition::AwsIsoE => "aws-iso-e",
            Partition::AwsIsoF => "aws-iso-f",
            Partition::AwsEusc => "aws-eusc",
        }
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A private ECR registry (`<account>.dkr.ecr.<region>.<domain>` and its variants) or ECR
/// Public (`public.ecr.aws`, dual-stack `ecr-public.aws.com`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Registry {
    /// The 12-digit AWS account id; [`PUBLIC_ACCOUNT`] for ECR Public, which is one registry
    /// for every account (policy patterns name it so).
    pub account: String,
    /// The region tokens come from: the host's, or [`PUBLIC_REGION`] for ECR Public.
    pub region: String,
    pub partition: Partition,
    /// The host as it should appear in a docker config: lowercase, no scheme, port or path.
    pub host: String,
    pub fips: bool,
    pub dual_stack: bool,
    /// ECR Public: tokens come from ECR Public's own GetAuthorizationToken.
    pub public: bool,
}

/// The account ECR Public registries are given, for policy patterns (`public`).
pub const PUBLIC_ACCOUNT: &str = "public";
/// ECR Public's API (and so its tokens) lives in us-east-1 only.
pub const PUBLIC_REGION: &str = "us-east-1";

/// ECR Public's registry hosts: IPv4, and dual-stack (IPv4 and IPv6).
const PUBLIC_HOSTS: &[(&str, bool)] = &[("public.ecr.aws", false), ("ecr-public.aws.com", true)];

impl fmt::Display for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.host)
    }
}

/// Why a string is not an ECR registry. The messages are meant for people.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("empty registry")]
    Empty,
    #[error("unsupported scheme {0:?} (use oci://, https:// or none)")]
    Scheme(String),
    #[error("not an ECR registry host")]
    NotEcr,
    #[error("account id must be 12 digits")]
    Account,
    #[error("invalid region {0:?}")]
    Region(String),
    #[error("region {region} does not belong to domain {domain}")]
    PartitionMismatch { region: String, domain: String },
    #[error("invalid port")]
    Port,
}

/// Regular domains (`dkr.ecr`) and dual-stack domains (`dkr-ecr`), by partition.
const DOMAINS: &[(&str, Partition, bool)] = &[
    ("amazonaws.com", Partition::Aws, false),
    ("amazonaws.com.cn", Partition::AwsCn, false),
    ("c2s.ic.gov", Partition::AwsIso, false),
    ("sc2s.sgov.gov", Partition::AwsIsoB, false),
    ("cloud.adc-e.uk", Partition::AwsIsoE, false),
    ("csp.hci.ic.gov", Partition::AwsIsoF, false),
    ("amazonaws.eu", Partition::AwsEusc, false),
    ("on.aws", Partition::Aws, true),
    ("on.amazonwebservices.com.cn", Partition::AwsCn, true),
];

/// Longest accepted input; real hosts are well under 100 characters.
const MAX_LEN: usize = 2048;

/// Parses a registry reference: a bare host, or a URL with `oci://` or `https://`, optionally
/// with a port and a path (`oci://123456789012.dkr.ecr.eu-west-1.amazonaws.com/charts`,
/// `public.ecr.aws/my-alias/app`).
pub fn parse(input: &str) -> Result<Registry, HostError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(HostError::Empty);
    }
    if s.len() > MAX_LEN {
        return Err(HostError::NotEcr);
    }
    let rest = match s.split_once("://") {
        Some((scheme, rest)) => {
            let scheme = scheme.to_ascii_lowercase();
            if scheme != "oci" && scheme != "https" {
                return Err(HostError::Scheme(scheme));
            }
            rest
        }
        None => s,
    };
    // Authority ends at the first path, query or fragment delimiter.
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err(HostError::NotEcr);
    }
    let host = match authority.rsplit_once(':') {
        Some((host, port)) => {
            if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
                return Err(HostError::Port);
            }
            host
        }
        None => authority,
    };
    // Hosts are almost always lowercase already: copy only when one is not.
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        parse_host(&host.to_ascii_lowercase())
    } else {
        parse_host(host)
    }
}

fn parse_host(host: &str) -> Result<Registry, HostError> {
    if host.is_empty() {
        return Err(HostError::Empty);
    }
    if let Some((public_host, dual_stack)) = PUBLIC_HOSTS.iter().find(|(h, _)| *h == host) {
        return Ok(Registry {
            account: PUBLIC_ACCOUNT.to_string(),
            region: PUBLIC_REGION.to_string(),
            partition: Partition::Aws,
            host: public_host.to_string(),
            fips: false,
            dual_stack: *dual_stack,
            public: true,
        });
    }
    let (account, rest) = host.split_once('.').ok_or(HostError::NotEcr)?;
    let (service, rest) = rest.split_once('.').ok_or(HostError::NotEcr)?;
    let (dual_stack, fips) = match service {
        "dkr" => {
            // `dkr.ecr` or `dkr.ecr-fips`: the second label belongs to the service.
            let (ecr, after) = rest.split_once('.').ok_or(HostError::NotEcr)?;
            let fips = match ecr {
                "ecr" => false,
                "ecr-fips" => true,
                _ => return Err(HostError::NotEcr),
            };
            return finish(account, after, false, fips, host);
        }
        "dkr-ecr" => (true, false),
        "dkr-ecr-fips" => (true, true),
        _ => return Err(HostError::NotEcr),
    };
    finish(account, rest, dual_stack, fips, host)
}

fn finish(
    account: &str,
    region_and_domain: &str,
    dual_stack: bool,
    fips: bool,
    host: &str,
) -> Result<Registry, HostError> {
    let (region, domain) = region_and_domain.split_once('.').ok_or(HostError::NotEcr)?;
    let partition = DOMAINS
        .iter()
        .find(|(d, _, ds)| *d == domain && *ds == dual_stack)
        .map(|(_, p, _)| *p)
        .ok_or(HostError::NotEcr)?;
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HostError::Account);
    }
    if !valid_region(region) {
        return Err(HostError::Region(region.to_string()));
    }
    let partition = match partition {
        Partition::Aws if region.starts_with("us-gov-") => Partition::AwsUsGov,
        Partition::AwsCn if !region.starts_with("cn-") => {
            return Err(mismatch(region, domain));
        }
        Partition::Aws if region.starts_with("cn-") => return Err(mismatch(region, domain)),
        p => p,
    };
    Ok(Registry {
        account: account.to_string(),
        region: region.to_string(),
        partition,
        host: host.to_string(),
        fips,
        dual_stack,
        public: false,
    })
}

fn mismatch(region: &str, domain: &str) -> HostError {
    HostError::PartitionMismatch {
        region: region.to_string(),
        domain: domain.to_string(),
    }
}

/// `us-east-1`, `us-gov-west-1`, `eu-isoe-west-1`, `eusc-de-east-1`: lowercase words joined by
/// hyphens, the first alphabetic and the last a number.
fn valid_region(region: &str) -> bool {
    // One pass, no list: this runs for every registry of every review.
    if region.len() > 32 {
        return false;
    }
    let (mut words, mut last) = (0, "");
    for word in region.split('-') {
        let letters_or_digits = word
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        let first_is_letters = words > 0 || word.bytes().all(|b| b.is_ascii_lowercase());
        if word.is_empty() || !letters_or_digits || !first_is_letters {
            return false;
        }
        words += 1;
        last = word;
    }
    words >= 3 && last.bytes().all(|b| b.is_ascii_digit())
}

/// Splits the `ecr-token-webhook/registries` annotation: comma- or whitespace-separated.
pub fn split_list(value: &str) -> impl Iterator<Item = &str> {
    value
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_shapes() {
        let cases = [
            ("us-east-1", true),
            ("us-gov-west-1", true),
            ("eu-isoe-west-1", true),
            ("eusc-de-east-1", true),
            ("us-east", false),
            ("us-east-x", false),
            ("1s-east-1", false),
            ("us--1", false),
            ("-us-east-1", false),
            ("us-east-1-", false),
            ("us-East-1", false),
            ("us_east_1", false),
            ("", false),
            ("a-b-1", true),
            (&format!("{}-east-1", "a".repeat(25)), true),
            (&format!("{}-east-1", "a".repeat(26)), false),
        ];
        for (region, ok) in cases {
            assert_eq!(valid_region(region), ok, "{region}");
        }
    }

    fn ok(input: &str, account: &str, region: &str, partition: Partition, host: &str) {
        let r = parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(r.account, account, "{input}");
        assert_eq!(r.region, region, "{input}");
        assert_eq!(r.partition, partition, "{input}");
        assert_eq!(r.host, host, "{input}");
    }

    #[test]
    fn accepts_every_ecr_form() {
        use Partition::*;
        let std = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
        let cases: &[(&str, &str, &str, Partition, &str)] = &[
            (std, "123456789012", "us-east-1", Aws, std),
            (
                &format!("oci://{std}"),
                "123456789012",
                "us-east-1",
                Aws,
                std,
            ),
            (
                &format!("https://{std}"),
                "123456789012",
                "us-east-1",
                Aws,
                std,
            ),
            (
                &format!("OCI://{std}/charts/app"),
                "123456789012",
                "us-east-1",
                Aws,
                std,
            ),
            (&format!("{std}:443"), "123456789012", "us-east-1", Aws, std),
            (
                &format!("https://{std}:443/v2/"),
                "123456789012",
                "us-east-1",
                Aws,
                std,
            ),
            (&format!("  {std}  "), "123456789012", "us-east-1", Aws, std),
            (&std.to_uppercase(), "123456789012", "us-east-1", Aws, std),
            (
                "123456789012.dkr.ecr-fips.us-east-1.amazonaws.com",
                "123456789012",
                "us-east-1",
                Aws,
                "123456789012.dkr.ecr-fips.us-east-1.amazonaws.com",
            ),
            (
                "123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn",
                "123456789012",
                "cn-north-1",
                AwsCn,
                "123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn",
            ),
            (
                "123456789012.dkr-ecr.eu-west-1.on.aws",
                "123456789012",
                "eu-west-1",
                Aws,
                "123456789012.dkr-ecr.eu-west-1.on.aws",
            ),
            (
                "123456789012.dkr-ecr-fips.us-gov-west-1.on.aws",
                "123456789012",
                "us-gov-west-1",
                AwsUsGov,
                "123456789012.dkr-ecr-fips.us-gov-west-1.on.aws",
            ),
            (
                "123456789012.dkr-ecr.cn-northwest-1.on.amazonwebservices.com.cn",
                "123456789012",
                "cn-northwest-1",
                AwsCn,
                "123456789012.dkr-ecr.cn-northwest-1.on.amazonwebservices.com.cn",
            ),
            (
                "123456789012.dkr.ecr.us-gov-east-1.amazonaws.com",
                "123456789012",
                "us-gov-east-1",
                AwsUsGov,
                "123456789012.dkr.ecr.us-gov-east-1.amazonaws.com",
            ),
            (
                "123456789012.dkr.ecr.us-iso-east-1.c2s.ic.gov",
                "123456789012",
                "us-iso-east-1",
                AwsIso,
                "123456789012.dkr.ecr.us-iso-east-1.c2s.ic.gov",
            ),
            (
                "123456789012.dkr.ecr.us-isob-east-1.sc2s.sgov.gov",
                "123456789012",
                "us-isob-east-1",
                AwsIsoB,
                "123456789012.dkr.ecr.us-isob-east-1.sc2s.sgov.gov",
            ),
            (
                "123456789012.dkr.ecr.eu-isoe-west-1.cloud.adc-e.uk",
                "123456789012",
                "eu-isoe-west-1",
                AwsIsoE,
                "123456789012.dkr.ecr.eu-isoe-west-1.cloud.adc-e.uk",
            ),
            (
                "123456789012.dkr.ecr.us-isof-south-1.csp.hci.ic.gov",
                "123456789012",
                "us-isof-south-1",
                AwsIsoF,
                "123456789012.dkr.ecr.us-isof-south-1.csp.hci.ic.gov",
            ),
            (
                "123456789012.dkr.ecr.eusc-de-east-1.amazonaws.eu",
                "123456789012",
                "eusc-de-east-1",
                AwsEusc,
                "123456789012.dkr.ecr.eusc-de-east-1.amazonaws.eu",
            ),
        ];
        for (input, account, region, partition, host) in cases {
            ok(input, account, region, *partition, host);
        }
    }

    #[test]
    fn accepts_ecr_public_hosts() {
        let cases: &[(&str, &str, bool)] = &[
            ("public.ecr.aws", "public.ecr.aws", false),
            ("PUBLIC.ECR.AWS", "public.ecr.aws", false),
            ("public.ecr.aws/my-alias/app", "public.ecr.aws", false),
            (
                "oci://public.ecr.aws/my-alias/charts",
                "public.ecr.aws",
                false,
            ),
            ("https://public.ecr.aws:443/v2/", "public.ecr.aws", false),
            ("  public.ecr.aws  ", "public.ecr.aws", false),
            ("ecr-public.aws.com", "ecr-public.aws.com", true),
            (
                "https://ecr-public.aws.com/my-alias/app",
                "ecr-public.aws.com",
                true,
            ),
        ];
        for (input, host, dual_stack) in cases {
            let r = parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert!(r.public, "{input}");
            assert_eq!(
                (r.host.as_str(), r.account.as_str(), r.region.as_str()),
                (*host, PUBLIC_ACCOUNT, PUBLIC_REGION),
                "{input}"
            );
            assert_eq!((r.dual_stack, r.fips), (*dual_stack, false), "{input}");
        }
        let private = parse("123456789012.dkr.ecr.us-east-1.amazonaws.com").unwrap();
        assert!(!private.public);
    }

    #[test]
    fn flags_fips_and_dual_stack() {
        let r = parse("123456789012.dkr-ecr-fips.us-east-1.on.aws").unwrap();
        assert!(r.fips && r.dual_stack);
        let r = parse("123456789012.dkr.ecr.us-east-1.amazonaws.com").unwrap();
        assert!(!r.fips && !r.dual_stack);
    }

    #[test]
    fn refuses_look_alikes_and_other_registries() {
        let cases: &[(&str, HostError)] = &[
            ("", HostError::Empty),
            ("   ", HostError::Empty),
            ("oci://", HostError::Empty),
            (
                "123456789012.dkr.ecr.us-east-1.amazonaws.com.evil.example",
                HostError::NotEcr,
            ),
            (
                "evil.example/123456789012.dkr.ecr.us-east-1.amazonaws.com",
                HostError::NotEcr,
            ),
            (
                "123456789012.dkr.ecr.us-east-1.amazonaws.com@evil.example",
                HostError::NotEcr,
            ),
            (
                "12345678901.dkr.ecr.us-east-1.amazonaws.com",
                HostError::Account,
            ),
            (
                "1234567890123.dkr.ecr.us-east-1.amazonaws.com",
                HostError::Account,
            ),
            (
                "12345678901a.dkr.ecr.us-east-1.amazonaws.com",
                HostError::Account,
            ),
            // ECR Public look-alikes and neighbours.
            ("public.ecr.aws.evil.example", HostError::NotEcr),
            ("evil.public.ecr.aws", HostError::NotEcr),
            ("public.ecr.aws@evil.example", HostError::NotEcr),
            ("evil.example/public.ecr.aws", HostError::NotEcr),
            ("ecr.aws", HostError::NotEcr),
            ("gallery.ecr.aws", HostError::NotEcr),
            ("ecr-public.us-east-1.api.aws", HostError::NotEcr),
            ("api.ecr-public.us-east-1.amazonaws.com", HostError::NotEcr),
            ("ecr-public.aws.com.evil.example", HostError::NotEcr),
            ("http://public.ecr.aws", HostError::Scheme("http".into())),
            ("public.ecr.aws:", HostError::Port),
            ("public.ecr.aws:99999x", HostError::Port),
            ("docker.io", HostError::NotEcr),
            ("https://index.docker.io/v1/", HostError::NotEcr),
            ("ghcr.io/org/chart", HostError::NotEcr),
            ("123456789012.dkr.ecr.amazonaws.com", HostError::NotEcr),
            (
                "123456789012.dkr.ecr.us_east_1.amazonaws.com",
                HostError::Region("us_east_1".into()),
            ),
            (
                "123456789012.dkr.ecr.useast1.amazonaws.com",
                HostError::Region("useast1".into()),
            ),
            (
                "123456789012.dkr.ecr.us-east-x.amazonaws.com",
                HostError::Region("us-east-x".into()),
            ),
            (
                "123456789012.dkr.ecr.us-east-1.on.aws",
                HostError::NotEcr, // dual-stack domain needs the dkr-ecr label
            ),
            (
                "123456789012.dkr-ecr.us-east-1.amazonaws.com",
                HostError::NotEcr,
            ),
            (
                "123456789012.dkr.ecr.us-east-1.amazonaws.com.cn",
                HostError::PartitionMismatch {
                    region: "us-east-1".into(),
                    domain: "amazonaws.com.cn".into(),
                },
            ),
            (
                "123456789012.dkr.ecr.cn-north-1.amazonaws.com",
                HostError::PartitionMismatch {
                    region: "cn-north-1".into(),
                    domain: "amazonaws.com".into(),
                },
            ),
            (
                "http://123456789012.dkr.ecr.us-east-1.amazonaws.com",
                HostError::Scheme("http".into()),
            ),
            (
                "ftp://123456789012.dkr.ecr.us-east-1.amazonaws.com",
                HostError::Scheme("ftp".into()),
            ),
            (
                "123456789012.dkr.ecr.us-east-1.amazonaws.com:",
                HostError::Port,
            ),
            (
                "123456789012.dkr.ecr.us-east-1.amazonaws.com:https",
                HostError::Port,
            ),
            (
                "123456789012.api.ecr.us-east-1.amazonaws.com",
                HostError::NotEcr,
            ),
            ("123456789012.dkr.ecr.us-east-1.", HostError::NotEcr),
            (".dkr.ecr.us-east-1.amazonaws.com", HostError::Account),
        ];
        for (input, want) in cases {
            assert_eq!(parse(input).as_ref(), Err(want), "{input:?}");
        }
        assert_eq!(parse(&"1".repeat(5000)), Err(HostError::NotEcr));
    }

    #[test]
    fn splits_annotation_lists() {
        let got: Vec<&str> = split_list(" a.example, b.example\tc.example,,\n d ").collect();
        assert_eq!(got, ["a.example", "b.example", "c.example", "d"]);
        assert_eq!(split_list(" , ").count(), 0);
    }
}
