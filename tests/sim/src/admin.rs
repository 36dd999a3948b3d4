//! Admin commands: Identify, features, queue management, Abort, Doorbell
//! Buffer Config, Get Log Page.

use bare_nvme::spec::command::queue_fields::{
    ABORT_CID, ABORT_SQID, CQID, NCQ, NSQ, PC, QID, QSIZE,
};
use bare_nvme::spec::command::{admin, cns, feature, sc, sct, Status, SubmissionEntry};
use bare_nvme::spec::identify::{self, ctrl, nid, ns, FLBAS_EXTENDED_METADATA, IDENTIFY_SIZE};

use crate::controller::{Controller, Env};
use crate::prp;
use crate::queues::{Cq, Outcome, Sq};
use crate::spec::{garbage_bytes, Metadata};

/// Command specific status codes (NVMe Base 2.0, section 5).
mod cs {
    pub const COMPLETION_QUEUE_INVALID: u8 = 0x00;
    pub const INVALID_QUEUE_IDENTIFIER: u8 = 0x01;
    pub const INVALID_QUEUE_SIZE: u8 = 0x02;
    pub const INVALID_QUEUE_DELETION: u8 = 0x0C;
}
/// Generic status: command sequence error.
const COMMAND_SEQUENCE_ERROR: u8 = 0x0C;

fn generic(code: u8) -> Outcome {
    Outcome::err(Status::new(sct::GENERIC, code))
}

fn specific(code: u8) -> Outcome {
    Outcome::err(Status::new(sct::COMMAND_SPECIFIC, code))
}

fn put(page: &mut [u8], at: usize, bytes: &[u8]) {
    page[at..at + bytes.len()].copy_from_slice(bytes);
}

fn put_str(page: &mut [u8], at: usize, len: usize, s: &str) {
    page[at..at + len].fill(b' ');
    let b = s.as_bytes();
    let n = b.len().min(len);
    page[at..at + n].copy_from_slice(&b[..n]);
}

fn patch(page: &mut [u8], garbage: Option<u64>, patches: &[(usize, Vec<u8>)]) {
    if let Some(seed) = garbage {
        garbage_bytes(seed, page);
    }
    for (at, bytes) in patches {
        let end = (*at + bytes.len()).min(page.len());
        if *at < end {
            page[*at..end].copy_from_slice(&bytes[..end - at]);
        }
    }
}

impl Controller {
    /// The Identify Controller page.
    pub(crate) fn identify_controller(&self) -> Vec<u8> {
        let s = &self.spec;
        let mut p = vec![0u8; IDENTIFY_SIZE];
        put(&mut p, ctrl::VID, &0x1b36u16.to_le_bytes());
        put(&mut p, ctrl::VID + 2, &0x1af4u16.to_le_bytes());
        put_str(&mut p, ctrl::SN, 20, &s.serial);
        put_str(&mut p, ctrl::MN, 40, &s.model);
        put_str(&mut p, ctrl::FR, 8, &s.firmware);
        p[ctrl::MDTS] = s.mdts;
        put(&mut p, ctrl::VER, &0x0001_0400u32.to_le_bytes());
        let mut oacs = 0u16;
        if s.shadow_doorbells {
            oacs |= identify::OACS_DOORBELL_BUFFER_CONFIG;
        }
        put(&mut p, ctrl::OACS, &oacs.to_le_bytes());
        p[ctrl::ACL] = 3;
        p[ctrl::AERL] = crate::events::AERL;
        put(
            &mut p,
            ctrl::CNTLID,
            &crate::events::CONTROLLER_ID.to_le_bytes(),
        );
        p[ctrl::SQES] = 0x66;
        p[ctrl::CQES] = 0x44;
        put(
            &mut p,
            ctrl::NN,
            &(self.namespaces.len() as u32).to_le_bytes(),
        );
        let oncs = identify::ONCS_DATASET_MANAGEMENT | identify::ONCS_WRITE_ZEROES;
        put(&mut p, ctrl::ONCS, &oncs.to_le_bytes());
        // Bit 0: cache present; bits 2:1: flush to all namespaces supported.
        p[ctrl::VWC] = if s.volatile_cache { 0x07 } else { 0 };
        patch(&mut p, s.garbage, &s.patches);
        p
    }

    /// The Identify Namespace page of namespace `nsid` (1-based, valid).
    pub(crate) fn identify_namespace(&self, nsid: u32) -> Vec<u8> {
        let n = &self.namespaces[nsid as usize - 1];
        let mut p = vec![0u8; IDENTIFY_SIZE];
        let blocks = n.blocks().to_le_bytes();
        put(&mut p, ns::NSZE, &blocks);
        put(&mut p, ns::NCAP, &blocks);
        put(&mut p, 16, &blocks);
        let shift = n.block_size().trailing_zeros();
        let mut formats = vec![9u32, 12];
        if !formats.contains(&shift) {
            formats.push(shift);
        }
        p[ns::NLBAF] = formats.len() as u8 - 1;
        let index = formats.iter().position(|&f| f == shift).expect("listed");
        p[ns::FLBAS] = index as u8;
        for (i, f) in formats.iter().enumerate() {
            put(&mut p, ns::LBAF0 + 4 * i, &(f << 16).to_le_bytes());
        }
        if let Some(metadata) = n.spec.metadata {
            // The formatted LBA format carries the metadata size; MC says
            // which transfer the namespace supports.
            let lbaf = shift << 16 | metadata.size() as u32;
            put(&mut p, ns::LBAF0 + 4 * index, &lbaf.to_le_bytes());
            match metadata {
                Metadata::Separate(_) => p[ns::MC] = 0x2,
                Metadata::Extended(_) => {
                    p[ns::MC] = 0x1;
                    p[ns::FLBAS] |= FLBAS_EXTENDED_METADATA;
                }
            }
        }
        if n.spec.protection & 0x7 != 0 {
            p[ns::DPC] = 1 << ((n.spec.protection & 0x7) - 1) | 0x18;
        }
        p[ns::DPS] = n.spec.protection;
        put(&mut p, ns::EUI64, &n.spec.eui64.to_le_bytes());
        patch(&mut p, n.spec.garbage, &n.spec.patches);
        p
    }

    /// The Namespace Identification Descriptor list of namespace `nsid`
    /// (1-based, valid), as QEMU 7.2 builds it: the EUI-64 when set (big
    /// endian), then the command set identifier.
    pub(crate) fn namespace_descriptors(&self, nsid: u32) -> Vec<u8> {
        let n = &self.namespaces[nsid as usize - 1];
        let mut p = vec![0u8; IDENTIFY_SIZE];
        let mut at = 0;
        if n.spec.eui64 != 0 {
            p[at] = nid::EUI64;
            p[at + 1] = 8;
            put(&mut p, at + nid::HEADER, &n.spec.eui64.to_be_bytes());
            at += nid::HEADER + 8;
        }
        p[at] = nid::CSI;
        p[at + 1] = 1;
        p[at + nid::HEADER] = n.spec.csi;
        patch(&mut p, None, &n.spec.descriptor_patches);
        p
    }

    /// Transfers `data` to the host memory named by the command's PRPs.
    pub(crate) fn transfer_out(
        &self,
        sqe: &SubmissionEntry,
        data: &[u8],
        env: &mut Env,
    ) -> Result<(), Status> {
        let segs = prp::segments(
            env.mem,
            env.stats,
            sqe.prp1,
            sqe.prp2,
            data.len(),
            self.page_size(),
        )?;
        prp::check(env.mem, env.stats, &segs)?;
        let serial = &self.spec.serial;
        if segs
            .iter()
            .any(|&(p, n)| env.write_into_caller_memory(serial, p, n))
        {
            return Err(Status::new(sct::GENERIC, sc::DATA_TRANSFER_ERROR));
        }
        prp::write_out(env.mem, &segs, data);
        Ok(())
    }

    /// Transfers `data.len()` bytes from the host memory named by the PRPs.
    pub(crate) fn transfer_in(
        &self,
        sqe: &SubmissionEntry,
        data: &mut [u8],
        env: &mut Env,
    ) -> Result<(), Status> {
        let segs = prp::segments(
            env.mem,
            env.stats,
            sqe.prp1,
            sqe.prp2,
            data.len(),
            self.page_size(),
        )?;
        prp::check(env.mem, env.stats, &segs)?;
        prp::read_in(env.mem, &segs, data);
        Ok(())
    }

    fn reply(&self, sqe: &SubmissionEntry, data: &[u8], env: &mut Env) -> Outcome {
        match self.transfer_out(sqe, data, env) {
            Ok(()) => Outcome::ok(0),
            Err(s) => Outcome::err(s),
        }
    }

    pub(crate) fn execute_admin(&mut self, sqe: SubmissionEntry, env: &mut Env) -> Option<Outcome> {
        Some(match sqe.opcode() {
            admin::IDENTIFY => self.identify(&sqe, env),
            admin::GET_LOG_PAGE => self.get_log_page(&sqe, env),
            admin::ASYNC_EVENT_REQUEST => return self.async_event_request(&sqe, env),
            admin::NAMESPACE_ATTACHMENT => self.namespace_attachment(&sqe, env),
            admin::SET_FEATURES => self.set_features(&sqe),
            admin::GET_FEATURES => self.get_features(&sqe),
            admin::CREATE_CQ => self.create_cq(&sqe, env),
            admin::CREATE_SQ => self.create_sq(&sqe, env),
            admin::DELETE_SQ => self.delete_sq(&sqe, env),
            admin::DELETE_CQ => self.delete_cq(&sqe, env),
            admin::ABORT => self.abort(&sqe, env),
            admin::DOORBELL_BUFFER_CONFIG if self.spec.shadow_doorbells => {
                self.doorbell_buffer_config(&sqe, env)
            }
            _ => generic(sc::INVALID_OPCODE),
        })
    }

    fn identify(&self, sqe: &SubmissionEntry, env: &mut Env) -> Outcome {
        let nn = self.namespaces.len() as u32;
        match sqe.cdw10 & 0xFF {
            cns::CONTROLLER => self.reply(sqe, &self.identify_controller(), env),
            cns::NAMESPACE | cns::NAMESPACE_DESCRIPTORS
                if (1..=nn).contains(&sqe.nsid)
                    && !self.namespaces[sqe.nsid as usize - 1].attached =>
            {
                // An inactive namespace: a zeroed page.
                self.reply(sqe, &vec![0u8; IDENTIFY_SIZE], env)
            }
            cns::NAMESPACE if (1..=nn).contains(&sqe.nsid) => {
                self.reply(sqe, &self.identify_namespace(sqe.nsid), env)
            }
            cns::NAMESPACE => generic(sc::INVALID_NAMESPACE),
            cns::NAMESPACE_DESCRIPTORS if !self.spec.descriptor_lists => generic(sc::INVALID_FIELD),
            cns::NAMESPACE_DESCRIPTORS if (1..=nn).contains(&sqe.nsid) => {
                let n = &self.namespaces[sqe.nsid as usize - 1];
                match n.spec.descriptor_failure {
                    Some(code) => generic(code),
                    None => self.reply(sqe, &self.namespace_descriptors(sqe.nsid), env),
                }
            }
            cns::NAMESPACE_DESCRIPTORS => generic(sc::INVALID_NAMESPACE),
            cns::ACTIVE_NAMESPACES if sqe.nsid < 0xFFFF_FFFE => {
                let mut p = vec![0u8; IDENTIFY_SIZE];
                let active = (sqe.nsid.saturating_add(1)..=nn)
                    .filter(|&id| self.namespaces[id as usize - 1].attached);
                for (i, id) in active.take(1024).enumerate() {
                    put(&mut p, i * 4, &id.to_le_bytes());
                }
                self.reply(sqe, &p, env)
            }
            cns::ACTIVE_NAMESPACES => generic(sc::INVALID_NAMESPACE),
            _ => generic(sc::INVALID_FIELD),
        }
    }

    fn set_features(&mut self, sqe: &SubmissionEntry) -> Outcome {
        match sqe.cdw10 & 0xFF {
            feature::NUMBER_OF_QUEUES => {
                if self.sqs.len() > 1 || self.cqs.len() > 1 {
                    return generic(COMMAND_SEQUENCE_ERROR);
                }
                let nsqr = NSQ.get(sqe.cdw11);
                let ncqr = NCQ.get(sqe.cdw11);
                if nsqr == 0xFFFF || ncqr == 0xFFFF {
                    return generic(sc::INVALID_FIELD);
                }
                let max = self.spec.max_ioqpairs as u32;
                let nsq = (nsqr + 1).min(max) as u16;
                let ncq = (ncqr + 1).min(max) as u16;
                self.queues_granted = Some((nsq, ncq));
                Outcome::ok(((ncq as u32 - 1) << 16) | (nsq as u32 - 1))
            }
            feature::ASYNC_EVENT_CONFIG => {
                self.events.config = sqe.cdw11;
                Outcome::ok(0)
            }
            feature::TEMPERATURE_THRESHOLD => {
                let kelvins = (sqe.cdw11 & 0xFFFF) as u16;
                match (sqe.cdw11 >> 20) & 0x3 {
                    0 => self.events.over_threshold = kelvins,
                    1 => self.events.under_threshold = kelvins,
                    _ => return generic(sc::INVALID_FIELD),
                }
                Outcome::ok(0)
            }
            feature::VOLATILE_WRITE_CACHE if self.spec.volatile_cache => {
                self.write_cache_enabled = sqe.cdw11 & 1 != 0;
                if !self.write_cache_enabled {
                    self.namespaces.iter_mut().for_each(|n| n.flush());
                }
                Outcome::ok(0)
            }
            _ => generic(sc::INVALID_FIELD),
        }
    }

    fn get_features(&self, sqe: &SubmissionEntry) -> Outcome {
        match sqe.cdw10 & 0xFF {
            feature::NUMBER_OF_QUEUES => {
                let max = self.spec.max_ioqpairs;
                let (nsq, ncq) = self.queues_granted.unwrap_or((max, max));
                Outcome::ok(((ncq as u32 - 1) << 16) | (nsq as u32 - 1))
            }
            feature::VOLATILE_WRITE_CACHE if self.spec.volatile_cache => {
                Outcome::ok(self.write_cache_enabled as u32)
            }
            feature::ASYNC_EVENT_CONFIG => Outcome::ok(self.events.config),
            feature::TEMPERATURE_THRESHOLD => match (sqe.cdw11 >> 20) & 0x3 {
                0 => Outcome::ok(self.events.over_threshold as u32),
                1 => Outcome::ok(self.events.under_threshold as u32),
                _ => generic(sc::INVALID_FIELD),
            },
            _ => generic(sc::INVALID_FIELD),
        }
    }

    /// Checks an I/O queue's id, size and memory; `limit` is the highest
    /// allowed id.
    fn check_new_queue(
        &self,
        what: &str,
        sqe: &SubmissionEntry,
        limit: u16,
        exists: bool,
        entry: usize,
        env: &mut Env,
    ) -> Result<(u16, u16), Outcome> {
        let serial = &self.spec.serial;
        let qid = QID.get(sqe.cdw10) as u16;
        let size = QSIZE.get(sqe.cdw10) + 1;
        if qid == 0 || qid > limit || exists {
            env.stats.protocol(format!(
                "{serial}: create {what} {qid}: invalid or taken id"
            ));
            return Err(specific(cs::INVALID_QUEUE_IDENTIFIER));
        }
        if size < 2 || size > self.spec.mqes as u32 + 1 {
            env.stats
                .protocol(format!("{serial}: create {what} {qid}: size {size}"));
            return Err(specific(cs::INVALID_QUEUE_SIZE));
        }
        if !PC.is_set(sqe.cdw11) {
            env.stats
                .protocol(format!("{serial}: create {what} {qid}: not contiguous"));
            return Err(generic(sc::INVALID_FIELD));
        }
        let base = sqe.prp1;
        if !base.is_multiple_of(self.page_size() as u64)
            || !env.mem.contains(base, size as usize * entry)
        {
            env.stats.protocol(format!(
                "{serial}: create {what} {qid}: base {base:#x} unaligned or not DMA memory"
            ));
            return Err(generic(sc::INVALID_FIELD));
        }
        Ok((qid, size as u16))
    }

    fn create_cq(&mut self, sqe: &SubmissionEntry, env: &mut Env) -> Outcome {
        let max = self.spec.max_ioqpairs;
        let limit = self.queues_granted.map_or(max, |g| g.1);
        let exists = self.cqs.contains_key(&(QID.get(sqe.cdw10) as u16));
        match self.check_new_queue("CQ", sqe, limit, exists, 16, env) {
            Ok((qid, size)) => {
                self.cqs.insert(qid, Cq::new(sqe.prp1, size));
                Outcome::ok(0)
            }
            Err(o) => o,
        }
    }

    fn create_sq(&mut self, sqe: &SubmissionEntry, env: &mut Env) -> Outcome {
        let max = self.spec.max_ioqpairs;
        let limit = self.queues_granted.map_or(max, |g| g.0);
        let exists = self.sqs.contains_key(&(QID.get(sqe.cdw10) as u16));
        let cqid = CQID.get(sqe.cdw11) as u16;
        if cqid == 0 || !self.cqs.contains_key(&cqid) {
            env.stats.protocol(format!(
                "{}: create SQ for missing CQ {cqid}",
                self.spec.serial
            ));
            return specific(cs::COMPLETION_QUEUE_INVALID);
        }
        match self.check_new_queue("SQ", sqe, limit, exists, 64, env) {
            Ok((qid, size)) => {
                self.sqs.insert(qid, Sq::new(sqe.prp1, size, cqid));
                Outcome::ok(0)
            }
            Err(o) => o,
        }
    }

    fn delete_sq(&mut self, sqe: &SubmissionEntry, env: &mut Env) -> Outcome {
        let qid = QID.get(sqe.cdw10) as u16;
        if qid == 0 || !self.sqs.contains_key(&qid) {
            env.stats
                .protocol(format!("{}: delete missing SQ {qid}", self.spec.serial));
            return specific(cs::INVALID_QUEUE_IDENTIFIER);
        }
        // Commands still held in the SQ complete as aborted before it goes.
        let aborted: Vec<u16> = self
            .held
            .iter()
            .filter(|h| h.sqid == qid)
            .map(|h| h.sqe.cid())
            .collect();
        self.held.retain(|h| h.sqid != qid);
        for cid in aborted {
            let status = Status::new(sct::GENERIC, sc::ABORTED_SQ_DELETION);
            self.complete(qid, cid, Outcome::err(status), env);
        }
        self.sqs.remove(&qid);
        self.last_cid.remove(&qid);
        Outcome::ok(0)
    }

    fn delete_cq(&mut self, sqe: &SubmissionEntry, env: &mut Env) -> Outcome {
        let qid = QID.get(sqe.cdw10) as u16;
        if qid == 0 || !self.cqs.contains_key(&qid) {
            env.stats
                .protocol(format!("{}: delete missing CQ {qid}", self.spec.serial));
            return specific(cs::INVALID_QUEUE_IDENTIFIER);
        }
        if self.sqs.values().any(|s| s.cqid == qid) {
            env.stats.protocol(format!(
                "{}: delete CQ {qid} with SQs attached",
                self.spec.serial
            ));
            return specific(cs::INVALID_QUEUE_DELETION);
        }
        self.cqs.remove(&qid);
        Outcome::ok(0)
    }

    fn abort(&mut self, sqe: &SubmissionEntry, env: &mut Env) -> Outcome {
        let sqid = ABORT_SQID.get(sqe.cdw10) as u16;
        let cid = ABORT_CID.get(sqe.cdw10) as u16;
        let Some(i) = self
            .held
            .iter()
            .position(|h| h.sqid == sqid && h.sqe.cid() == cid)
        else {
            // Dword 0 bit 0 set: the command was not aborted.
            return Outcome::ok(1);
        };
        self.held.remove(i);
        let status = Status::new(sct::GENERIC, sc::ABORT_REQUESTED);
        self.complete(sqid, cid, Outcome::err(status), env);
        Outcome::ok(0)
    }

    fn doorbell_buffer_config(&mut self, sqe: &SubmissionEntry, env: &mut Env) -> Outcome {
        let page = self.page_size();
        let ok = |a: u64| a != 0 && a.is_multiple_of(page as u64) && env.mem.contains(a, page);
        if !ok(sqe.prp1) || !ok(sqe.prp2) {
            env.stats.protocol(format!(
                "{}: doorbell buffers {:#x}/{:#x} unaligned or not DMA memory",
                self.spec.serial, sqe.prp1, sqe.prp2
            ));
            return generic(sc::INVALID_FIELD);
        }
        self.shadow = Some((sqe.prp1, sqe.prp2));
        // As QEMU does: the current tails and heads seed the buffers.
        let stride = 4u64 << self.spec.dstrd;
        for (&qid, sq) in self.sqs.iter().filter(|(&q, _)| q != 0) {
            let off = 2 * qid as u64 * stride;
            let _ = env.mem.write_u32(sqe.prp1 + off, sq.tail as u32);
            let _ = env.mem.write_u32(sqe.prp2 + off, sq.tail as u32);
        }
        for (&qid, cq) in self.cqs.iter().filter(|(&q, _)| q != 0) {
            let off = (2 * qid as u64 + 1) * stride;
            let _ = env.mem.write_u32(sqe.prp1 + off, cq.head as u32);
            let _ = env.mem.write_u32(sqe.prp2 + off, cq.head as u32);
        }
        Outcome::ok(0)
    }
}
