//! The read/write class and session effects of recently seen statement
//! texts, per worker thread.
//!
//! Applications send the same texts over and over (ORM queries, drivers'
//! unnamed statements, pgbench), and the lexer costs about 1.7 ns per byte:
//! a 300-byte join takes ~0.5 µs to classify, a lookup here a hash and a
//! compare. Transaction pooling reads every simple Query for its session
//! effects whether or not it routes, so both answers are kept. Each worker
//! thread runs its own single-threaded runtime, so a thread-local table
//! needs no lock. The table is direct-mapped and bounded ([`SLOTS`] texts of
//! at most [`MAX_TEXT`] bytes, buffers reused), so texts that never repeat
//! cost one copy and never grow it.

use std::cell::RefCell;
use std::hash::BuildHasher;

use super::access::{self, Access, WriteFunctions};
use super::effects::{self, SessionEffects};
use super::lexer::LexOptions;

/// Texts remembered per thread (a power of two).
const SLOTS: usize = 1024;
/// Longer texts are read every time (and are rarely repeated verbatim).
const MAX_TEXT: usize = 2048;

/// Fixed seed: the table is per process, and a collision costs a lexer
/// pass, never a wrong answer (the whole text is compared).
const SEED: u64 = 0x5377_6974_6368_7961;

/// What is known of one text; each answer is filled in when first asked.
#[derive(Default)]
struct Slot {
    hash: u64,
    text: Vec<u8>,
    class: Option<RememberedClass>,
    /// With the default lexer options (`standard_conforming_strings` on).
    effects: Option<SessionEffects>,
}

/// A class and what it was computed with.
#[derive(Clone, Copy)]
struct RememberedClass {
    /// [`WriteFunctions::generation`] of the list it was computed with.
    generation: u64,
    opened: bool,
    class: Access,
}

thread_local! {
    static MEMO: RefCell<Vec<Slot>> = const { RefCell::new(Vec::new()) };
}

/// [`access::classify`] (or [`access::classify_opened`] when `opened`),
/// remembered per thread by text.
pub fn classify(sql: &[u8], functions: &WriteFunctions, opened: bool) -> Access {
    let compute = || {
        if opened {
            access::classify_opened(sql, functions)
        } else {
            access::classify(sql, functions)
        }
    };
    let generation = functions.generation();
    with_slot(sql, compute, |slot| {
        if let Some(known) = slot.class
            && known.generation == generation
            && known.opened == opened
        {
            return known.class;
        }
        let class = compute();
        slot.class = Some(RememberedClass {
            generation,
            opened,
            class,
        });
        class
    })
}

/// [`effects::session_effects_bytes`], remembered per thread by text
/// unless the text is plainly without effects (such texts are often new
/// each time, and that check costs less than a lookup).
pub fn session_effects(sql: &[u8]) -> SessionEffects {
    if effects::plainly_without_effects(sql) {
        return SessionEffects::NONE;
    }
    // The shortcut was looked for above: straight to the lexer.
    let compute = || effects::lexed_effects(sql, LexOptions::default());
    with_slot(sql, compute, |slot| {
        *slot.effects.get_or_insert_with(compute)
    })
}

/// Runs `answer` on the slot holding `sql` (emptied first when it held
/// another text), or `uncached` when the text is too long to keep or the
/// table is in use further up this thread's stack.
fn with_slot<T>(
    sql: &[u8],
    uncached: impl FnOnce() -> T,
    answer: impl FnOnce(&mut Slot) -> T,
) -> T {
    if sql.len() > MAX_TEXT {
        return uncached();
    }
    let hash = foldhash::fast::FixedState::with_seed(SEED).hash_one(sql);
    MEMO.with(|memo| {
        let Ok(mut memo) = memo.try_borrow_mut() else {
            return uncached();
        };
        if memo.is_empty() {
            memo.resize_with(SLOTS, Slot::default);
        }
        // SLOTS is a power of two: the low bits pick the slot.
        let slot = &mut memo[hash as usize & (SLOTS - 1)];
        if slot.hash != hash || slot.text != sql {
            slot.hash = hash;
            slot.text.clear();
            slot.text.extend_from_slice(sql);
            slot.class = None;
            slot.effects = None;
        }
        answer(slot)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_classes_match_the_lexer_and_follow_the_function_list() {
        let plain = WriteFunctions::default();
        for sql in [
            "SELECT 1",
            "SELECT nextval('s')",
            "SELECT * FROM t FOR UPDATE",
            "SET TRANSACTION READ ONLY",
        ] {
            for opened in [false, true] {
                let expected = if opened {
                    access::classify_opened(sql.as_bytes(), &plain)
                } else {
                    access::classify(sql.as_bytes(), &plain)
                };
                // Twice: computed, then remembered.
                for _ in 0..2 {
                    assert_eq!(classify(sql.as_bytes(), &plain, opened), expected, "{sql}");
                }
            }
        }
        // A configured writing function changes the class of a remembered text.
        let extra = WriteFunctions::new(&["audit_touch"]);
        let sql = b"SELECT audit_touch(1)";
        assert_eq!(classify(sql, &plain, false), Access::Read);
        assert_eq!(classify(sql, &extra, false), Access::Write);
        assert_eq!(classify(sql, &plain, false), Access::Read);
    }

    #[test]
    fn remembered_effects_match_the_lexer_beside_a_remembered_class() {
        let functions = WriteFunctions::default();
        for sql in [
            "SELECT 1",
            "SET search_path = a",
            "LISTEN chan",
            "DISCARD ALL",
            "SELECT pg_advisory_lock(1)",
        ] {
            let expected = effects::session_effects_bytes(sql.as_bytes());
            // The class first, so the effects join a slot already holding the text.
            let class = classify(sql.as_bytes(), &functions, false);
            for _ in 0..2 {
                assert_eq!(session_effects(sql.as_bytes()), expected, "{sql}");
            }
            assert_eq!(classify(sql.as_bytes(), &functions, false), class, "{sql}");
        }
        // Colliding texts replace each other; every answer is still the lexer's.
        for i in 0..SLOTS * 2 {
            let listen = format!("LISTEN c{i}");
            let plain = format!("SELECT {i}");
            assert_eq!(
                session_effects(listen.as_bytes()).pin,
                Some(effects::PinReason::Listen)
            );
            assert!(session_effects(plain.as_bytes()).is_empty());
        }
    }

    #[test]
    fn long_and_colliding_texts_are_classified_every_time() {
        let functions = WriteFunctions::default();
        let long = format!("SELECT {} FROM t", "a, ".repeat(MAX_TEXT));
        assert_eq!(classify(long.as_bytes(), &functions, false), Access::Read);
        let long_write = format!("{long} FOR UPDATE");
        assert_eq!(
            classify(long_write.as_bytes(), &functions, false),
            Access::Write
        );
        // More texts than slots: every answer is still the lexer's.
        for i in 0..SLOTS * 2 {
            let read = format!("SELECT {i}");
            let write = format!("SELECT nextval('s{i}')");
            assert_eq!(classify(read.as_bytes(), &functions, false), Access::Read);
            assert_eq!(classify(write.as_bytes(), &functions, false), Access::Write);
        }
    }
}
