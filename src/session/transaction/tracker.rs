//! Which server response answers which client request.
//!
//! In transaction mode the proxy answers some requests itself (a Parse of a
//! statement the server connection already has, a Close of a cached
//! statement) and slips in requests of its own (a Parse the connection is
//! missing). The client must still see exactly the responses PostgreSQL
//! would have sent, in order. The tracker keeps one entry per request in
//! flight and tells the relay, for each server message, whether to pass it
//! on or drop it, and when to emit a reply the proxy made up.

use std::collections::VecDeque;

/// A reply the proxy sends in place of the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synthetic {
    /// ParseComplete ('1').
    ParseComplete,
    /// CloseComplete ('3').
    CloseComplete,
}

impl Synthetic {
    /// The message's bytes.
    pub fn bytes(self) -> &'static [u8] {
        match self {
            Self::ParseComplete => crate::protocol::messages::PARSE_COMPLETE,
            Self::CloseComplete => crate::protocol::messages::CLOSE_COMPLETE,
        }
    }
}

/// A request whose responses are in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Parse of the server-side statement with this hash (0: unnamed):
    /// ends with ParseComplete.
    Parse(u64),
    /// Bind: ends with BindComplete.
    Bind,
    /// Describe: ends with RowDescription or NoData.
    Describe,
    /// Execute: ends with CommandComplete, EmptyQueryResponse or PortalSuspended.
    Execute,
    /// Close of a portal (or an unnamed statement): ends with CloseComplete.
    Close,
    /// Sync, Query or FunctionCall: ends with ReadyForQuery.
    Ready,
    /// A Parse the proxy injected (statement hash): its ParseComplete is dropped.
    InjectedParse(u64),
    /// A reply the proxy owes the client once everything before it is answered.
    Reply(Synthetic),
}

impl Expect {
    fn ends_with(self, tag: u8) -> bool {
        match self {
            Self::Parse(_) | Self::InjectedParse(_) => tag == b'1',
            Self::Bind => tag == b'2',
            Self::Describe => matches!(tag, b'T' | b'n'),
            Self::Execute => matches!(tag, b'C' | b'I' | b's'),
            Self::Close => tag == b'3',
            Self::Ready => tag == b'Z',
            Self::Reply(_) => false,
        }
    }
}

/// What to do with one server message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Pass it to the client.
    Forward,
    /// Drop it (answers a request the proxy injected).
    Drop,
}

/// The queue of requests in flight on one server connection.
#[derive(Debug, Default)]
pub struct ResponseTracker {
    queue: VecDeque<Expect>,
    failed_parse: Option<u64>,
    completed_parse: Option<u64>,
}

impl ResponseTracker {
    /// Records a request sent to the server (or a reply owed by the proxy).
    pub fn push(&mut self, expect: Expect) {
        self.queue.push_back(expect);
    }

    /// True when no response is outstanding.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Replies owed to the client now that everything before them is answered.
    pub fn due_replies(&mut self, mut emit: impl FnMut(Synthetic)) {
        while let Some(Expect::Reply(reply)) = self.queue.front().copied() {
            self.queue.pop_front();
            emit(reply);
        }
    }

    /// Classifies a server message by its tag. Call [`Self::due_replies`]
    /// before (replies owed ahead of this message) and after.
    pub fn on_server_message(&mut self, tag: u8) -> Verdict {
        // Asynchronous messages belong to no request.
        if matches!(tag, b'N' | b'S' | b'A') {
            return Verdict::Forward;
        }
        let Some(front) = self.queue.front().copied() else {
            return Verdict::Forward;
        };
        if tag == b'E' && front != Expect::Ready {
            if let Expect::Parse(hash) | Expect::InjectedParse(hash) = front {
                self.failed_parse = Some(hash).filter(|h| *h != 0);
            }
            // The server now skips everything up to the next Sync.
            self.skip_to_ready();
            return Verdict::Forward;
        }
        if front.ends_with(tag) {
            self.queue.pop_front();
            if let Expect::Parse(hash) | Expect::InjectedParse(hash) = front {
                self.completed_parse = Some(hash).filter(|h| *h != 0);
            }
            if matches!(front, Expect::InjectedParse(_)) {
                return Verdict::Drop;
            }
        }
        Verdict::Forward
    }

    fn skip_to_ready(&mut self) {
        while let Some(front) = self.queue.front() {
            if *front == Expect::Ready {
                break;
            }
            self.queue.pop_front();
        }
    }

    /// The statement hash of a Parse the server just refused, once.
    pub fn take_failed_parse(&mut self) -> Option<u64> {
        self.failed_parse.take()
    }

    /// The statement hash of a Parse the server just completed, once.
    pub fn take_completed_parse(&mut self) -> Option<u64> {
        self.completed_parse.take()
    }

    /// How many ReadyForQuery messages the client still waits for.
    pub fn pending_ready(&self) -> usize {
        self.queue.iter().filter(|e| **e == Expect::Ready).count()
    }

    /// True while a ReadyForQuery is still due (without counting them all).
    pub fn awaits_ready(&self) -> bool {
        self.queue.contains(&Expect::Ready)
    }

    /// Forgets everything (the server connection is gone).
    pub fn clear(&mut self) {
        self.queue.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(tracker: &mut ResponseTracker, server: &[u8]) -> Vec<u8> {
        let mut client = Vec::new();
        for &tag in server {
            tracker.due_replies(|r| client.push(r.bytes()[0]));
            if tracker.on_server_message(tag) == Verdict::Forward {
                client.push(tag);
            }
            tracker.due_replies(|r| client.push(r.bytes()[0]));
        }
        client
    }

    #[test]
    fn injected_parse_is_hidden_and_owed_parse_complete_is_inserted_in_order() {
        let mut t = ResponseTracker::default();
        // Client: Parse(cached) Bind Execute Sync; proxy: reply to the Parse,
        // inject a Parse before Bind.
        t.push(Expect::Reply(Synthetic::ParseComplete));
        t.push(Expect::InjectedParse(9));
        t.push(Expect::Bind);
        t.push(Expect::Execute);
        t.push(Expect::Ready);
        let mut client = Vec::new();
        t.due_replies(|r| client.push(r.bytes()[0]));
        client.extend(run(&mut t, b"12DCZ"));
        assert_eq!(client, b"12DCZ");
        assert!(t.is_empty());
    }

    #[test]
    fn error_skips_to_sync_including_owed_replies() {
        let mut t = ResponseTracker::default();
        t.push(Expect::Bind);
        t.push(Expect::Reply(Synthetic::CloseComplete));
        t.push(Expect::Execute);
        t.push(Expect::Ready);
        assert_eq!(run(&mut t, b"EZ"), b"EZ");
        assert!(t.is_empty());
    }

    #[test]
    fn simple_query_error_does_not_end_the_query() {
        let mut t = ResponseTracker::default();
        t.push(Expect::Ready);
        assert_eq!(run(&mut t, b"TDCEZ"), b"TDCEZ");
        assert!(t.is_empty());
    }

    #[test]
    fn describe_statement_ends_at_row_description_or_no_data() {
        let mut t = ResponseTracker::default();
        t.push(Expect::Parse(0));
        t.push(Expect::Describe);
        t.push(Expect::Describe);
        t.push(Expect::Ready);
        assert_eq!(run(&mut t, b"1tTtnZ"), b"1tTtnZ");
        assert!(t.is_empty());
    }

    #[test]
    fn notices_and_parameter_status_pass_without_consuming() {
        let mut t = ResponseTracker::default();
        t.push(Expect::InjectedParse(9));
        t.push(Expect::Ready);
        assert_eq!(run(&mut t, b"N1SZ"), b"NSZ");
        assert_eq!(t.pending_ready(), 0);
    }

    #[test]
    fn refused_parse_is_reported_once() {
        let mut t = ResponseTracker::default();
        t.push(Expect::Parse(42));
        t.push(Expect::Ready);
        assert_eq!(run(&mut t, b"EZ"), b"EZ");
        assert_eq!(t.take_failed_parse(), Some(42));
        assert_eq!(t.take_failed_parse(), None);
    }
}
