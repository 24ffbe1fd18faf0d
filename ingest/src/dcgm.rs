//! The dcgm-exporter adapter: for fleets that already run dcgm-exporter,
//! scrape its Prometheus text endpoint and turn it into the same events
//! the NVML source makes (the readings go through the same
//! [`NvmlSource`] sampler, so deltas, resets and ids behave the same).
//!
//! dcgm-exporter's `DCGM_FI_DEV_XID_ERRORS` is a gauge holding only the
//! LAST Xid of a GPU: Xids are reported when that value changes to a
//! non-zero code, the first value seen is a baseline (a stale "last Xid =
//! 79" after a reboot does not fire again), and a repeat of the same code
//! cannot be seen at all. Where Xids matter, run the NVML or kernel-log
//! source too.

use std::collections::HashMap;
use std::time::Duration;

use pitcrew_contract::{Event, NvlinkCounter, PciAddress, Source, Timestamp};

use crate::nvml::{
    EccCounts, GpuSample, Gpus, NvmlError, NvmlSource, RemappedRows, RetiredPageCounts, XidReport,
};

/// One sample of the Prometheus text format.
#[derive(Clone, Debug, PartialEq)]
pub struct PromSample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl PromSample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses Prometheus text exposition. Lines that do not parse are counted
/// and skipped, never a panic.
pub fn parse_prometheus(text: &str) -> (Vec<PromSample>, usize) {
    let mut out = Vec::new();
    let mut bad = 0;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match parse_line(line) {
            Some(s) => out.push(s),
            None => bad += 1,
        }
    }
    (out, bad)
}

fn parse_line(line: &str) -> Option<PromSample> {
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = &line[..name_end];
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    {
        return None;
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(r) = rest.strip_prefix('{') {
        let mut r = r;
        loop {
            r = r.trim_start_matches([',', ' ']);
            if let Some(after) = r.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = r.find('=')?;
            let key = r[..eq].trim().to_owned();
            let mut chars = r[eq + 1..].char_indices();
            if chars.next()?.1 != '"' {
                return None;
            }
            let mut value = String::new();
            let mut end = None;
            let mut escaped = false;
            for (i, c) in chars {
                match (escaped, c) {
                    (true, 'n') => {
                        value.push('\n');
                        escaped = false;
                    }
                    (true, c) => {
                        value.push(c);
                        escaped = false;
                    }
                    (false, '\\') => escaped = true,
                    (false, '"') => {
                        end = Some(eq + 1 + i + 1);
                        break;
                    }
                    (false, c) => value.push(c),
                }
            }
            labels.push((key, value));
            r = &r[end?..];
        }
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "NaN" => f64::NAN,
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(PromSample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// One scrape, arranged per GPU.
#[derive(Clone, Debug, Default)]
pub struct DcgmScrape {
    gpus: Vec<GpuSample>,
    xid: HashMap<u32, u64>,
    driver_version: Option<String>,
}

fn as_u64(v: f64) -> Option<u64> {
    (v.is_finite() && v >= 0.0).then_some(v as u64)
}

impl DcgmScrape {
    /// Builds per-GPU readings from dcgm-exporter's metrics (labels `gpu`,
    /// `UUID`, `pci_bus_id`).
    pub fn from_samples(samples: &[PromSample]) -> DcgmScrape {
        let mut by_gpu: HashMap<u32, GpuSample> = HashMap::new();
        let mut xid = HashMap::new();
        let mut driver_version = None;
        // Partial readings that need two metrics to make one field.
        let mut ecc_vol: HashMap<u32, (Option<u64>, Option<u64>)> = HashMap::new();
        let mut ecc_agg: HashMap<u32, (Option<u64>, Option<u64>)> = HashMap::new();
        let mut remap: HashMap<u32, [Option<u64>; 3]> = HashMap::new();
        let mut retired: HashMap<u32, [Option<u64>; 3]> = HashMap::new();
        for s in samples {
            if !s.name.starts_with("DCGM_FI_") {
                continue;
            }
            let Some(index) = s.label("gpu").and_then(|g| g.parse::<u32>().ok()) else {
                continue;
            };
            if driver_version.is_none() {
                driver_version = s.label("DCGM_FI_DRIVER_VERSION").map(str::to_owned);
            }
            let g = by_gpu.entry(index).or_insert_with(|| GpuSample {
                index,
                uuid: s
                    .label("UUID")
                    .map_or_else(|| format!("index-{index}"), str::to_owned),
                pci: s
                    .label("pci_bus_id")
                    .and_then(|p| PciAddress::parse(p).ok()),
                ..GpuSample::default()
            });
            let v = s.value;
            match s.name.as_str() {
                "DCGM_FI_DEV_GPU_TEMP" => g.gpu_temp_c = v.is_finite().then_some(v),
                "DCGM_FI_DEV_MEMORY_TEMP" => {
                    g.memory_temp_c = (v.is_finite() && v > 0.0).then_some(v)
                }
                "DCGM_FI_DEV_POWER_USAGE" => g.power_w = v.is_finite().then_some(v),
                "DCGM_FI_DEV_PCIE_REPLAY_COUNTER" => g.pcie_replay = as_u64(v),
                "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS" | "DCGM_FI_DEV_CLOCKS_EVENT_REASONS" => {
                    g.clock_event_reasons = as_u64(v);
                }
                "DCGM_FI_DEV_XID_ERRORS" => {
                    if let Some(code) = as_u64(v) {
                        xid.insert(index, code);
                    }
                }
                "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL" => ecc_vol.entry(index).or_default().0 = as_u64(v),
                "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL" => ecc_vol.entry(index).or_default().1 = as_u64(v),
                "DCGM_FI_DEV_ECC_SBE_AGG_TOTAL" => ecc_agg.entry(index).or_default().0 = as_u64(v),
                "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL" => ecc_agg.entry(index).or_default().1 = as_u64(v),
                "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS" => {
                    remap.entry(index).or_default()[0] = as_u64(v)
                }
                "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS" => {
                    remap.entry(index).or_default()[1] = as_u64(v)
                }
                "DCGM_FI_DEV_ROW_REMAP_FAILURE" => remap.entry(index).or_default()[2] = as_u64(v),
                "DCGM_FI_DEV_RETIRED_SBE" => retired.entry(index).or_default()[0] = as_u64(v),
                "DCGM_FI_DEV_RETIRED_DBE" => retired.entry(index).or_default()[1] = as_u64(v),
                "DCGM_FI_DEV_RETIRED_PENDING" => retired.entry(index).or_default()[2] = as_u64(v),
                name => {
                    let counter = match name {
                        "DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL" => {
                            Some(NvlinkCounter::CrcFlit)
                        }
                        "DCGM_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL" => {
                            Some(NvlinkCounter::CrcData)
                        }
                        "DCGM_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL" => {
                            Some(NvlinkCounter::Replay)
                        }
                        "DCGM_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL" => {
                            Some(NvlinkCounter::Recovery)
                        }
                        _ => None,
                    };
                    if let (Some(c), Some(total)) = (counter, as_u64(v)) {
                        // dcgm-exporter sums the links: one pseudo-link.
                        g.nvlink.push((u32::MAX, c, total));
                    }
                }
            }
        }
        for (i, (c, u)) in ecc_vol {
            if let (Some(g), Some(corrected), Some(uncorrected)) = (by_gpu.get_mut(&i), c, u) {
                g.ecc_volatile = Some(EccCounts {
                    corrected,
                    uncorrected,
                });
            }
        }
        for (i, (c, u)) in ecc_agg {
            if let (Some(g), Some(corrected), Some(uncorrected)) = (by_gpu.get_mut(&i), c, u) {
                g.ecc_aggregate = Some(EccCounts {
                    corrected,
                    uncorrected,
                });
            }
        }
        for (i, [c, u, f]) in remap {
            if let (Some(g), Some(correctable), Some(uncorrectable)) = (by_gpu.get_mut(&i), c, u) {
                g.remapped_rows = Some(RemappedRows {
                    correctable,
                    uncorrectable,
                    pending: false,
                    failure: f.unwrap_or(0) != 0,
                });
            }
        }
        for (i, [s, d, p]) in retired {
            if let (Some(g), Some(single_bit), Some(double_bit)) = (by_gpu.get_mut(&i), s, d) {
                g.retired_pages = Some(RetiredPageCounts {
                    single_bit,
                    double_bit,
                    pending: p.unwrap_or(0) != 0,
                });
            }
        }
        let mut gpus: Vec<GpuSample> = by_gpu.into_values().collect();
        gpus.sort_by_key(|g| g.index);
        DcgmScrape {
            gpus,
            xid,
            driver_version,
        }
    }
}

impl Gpus for DcgmScrape {
    fn driver_version(&self) -> Result<String, NvmlError> {
        self.driver_version.clone().ok_or_else(|| NvmlError::Query {
            what: "driver version".to_owned(),
            message: "not in the scrape".to_owned(),
        })
    }

    fn count(&self) -> Result<u32, NvmlError> {
        Ok(u32::try_from(self.gpus.len()).unwrap_or(u32::MAX))
    }

    fn sample(&self, position: u32) -> Result<GpuSample, NvmlError> {
        self.gpus
            .get(position as usize)
            .cloned()
            .ok_or(NvmlError::Query {
                what: format!("gpu {position}"),
                message: "not in the scrape".to_owned(),
            })
    }
}

/// Turns successive scrapes into events.
#[derive(Debug)]
pub struct DcgmAdapter {
    sampler: NvmlSource,
    last_xid: HashMap<String, u64>,
}

impl DcgmAdapter {
    pub fn new(node: &str, boot_id: &str) -> DcgmAdapter {
        DcgmAdapter {
            sampler: NvmlSource::with_source(Source::Dcgm, node, boot_id),
            last_xid: HashMap::new(),
        }
    }

    /// Events of one scrape at `now`.
    pub fn ingest(&mut self, scrape: &DcgmScrape, now: Timestamp) -> Vec<Event> {
        let (mut events, _errors) = self.sampler.sample(scrape, now);
        for g in &scrape.gpus {
            let Some(&code) = scrape.xid.get(&g.index) else {
                continue;
            };
            let previous = self.last_xid.insert(g.uuid.clone(), code);
            if matches!(previous, Some(p) if p != code) && code != 0 {
                events.push(self.sampler.xid_event(&XidReport {
                    index: Some(g.index),
                    uuid: Some(g.uuid.clone()),
                    pci: g.pci,
                    code,
                    at: now,
                }));
            }
        }
        events
    }
}

/// Why a scrape failed (retryable: the exporter may be restarting).
#[derive(Debug, thiserror::Error)]
#[error("scrape {url}: {reason}")]
pub struct ScrapeError {
    pub url: String,
    pub reason: String,
}

/// GETs `http://host:port/path` (plain HTTP/1.0, as dcgm-exporter serves
/// on the node) and returns the body.
pub fn scrape(url: &str, timeout: Duration) -> Result<String, ScrapeError> {
    let err = |reason: String| ScrapeError {
        url: url.to_owned(),
        reason,
    };
    // A URL without a path is the exporter's usual `/metrics`.
    let full = match url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    {
        Some(rest) if !rest.contains('/') => format!("{}/metrics", url.trim_end_matches('/')),
        Some(_) => url.to_owned(),
        None => return Err(err("only http:// and https:// are supported".to_owned())),
    };
    let response = crate::http_client()
        .ok_or_else(|| err("the http client could not be built".to_owned()))?
        .get(&full)
        .timeout(timeout)
        .header(reqwest::header::ACCEPT, "text/plain")
        .send()
        .map_err(|e| err(e.without_url().to_string()))?;
    let status = response.status();
    if !status.is_success() {
        return Err(err(format!("http status `{status}`")));
    }
    let body = response
        .bytes()
        .map_err(|e| err(e.without_url().to_string()))?;
    if body.len() > 64 * 1024 * 1024 {
        return Err(err("response over 64 MiB".to_owned()));
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

#[cfg(test)]
mod tests;
