// One client per outbox directory: a `lock` file naming the process that drives the device
// (`{"pid": ..., "boot": ...}`, the boot from Linux's boot id where there is one). It is made
// whole or not at all (written under a name of its own, then linked to `lock`, which fails when
// one exists), so a reader never sees it half written.
//
// A lock is stale, and taken over, when its process is gone: the machine booted since (another
// boot id), no process has its pid, or the pid is this very process's but this process holds
// no lock there (a container's pid 1 after a restart, a device that boots the same way each
// time). A stale lock is moved aside by a rename and checked: if what was moved is not the
// stale lock it read (another taker was quicker and already made its own), it is put back and
// this one is refused. A second client in the same process is refused like another process.

import { readFileSync, unlinkSync } from "node:fs";
import { link, readFile, rename, unlink, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { VdevError } from "./errors.js";

/** The directories this process holds (resolved paths). */
const held = new Set();

/** This boot of the machine, where the system says ("" where it cannot). */
const BOOT = (() => {
  try {
    return readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
  } catch {
    return "";
  }
})();

/**
 * Whether process `pid` runs (one we may not signal runs too).
 * @param {number} pid
 */
function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return /** @type {NodeJS.ErrnoException} */ (error).code === "EPERM";
  }
}

/**
 * The process a lock's text names, if it still holds it.
 * @param {string} text
 * @param {string} directory resolved
 * @returns {number | undefined}
 */
function holder(text, directory) {
  let lock;
  try {
    lock = JSON.parse(text);
  } catch {
    return undefined;
  }
  const pid = lock?.pid;
  if (!Number.isSafeInteger(pid) || pid <= 0) return undefined;
  if (BOOT && typeof lock.boot === "string" && lock.boot && lock.boot !== BOOT) return undefined;
  if (pid === process.pid) return held.has(directory) ? pid : undefined;
  return alive(pid) ? pid : undefined;
}

/**
 * Takes the lock of `directory`; resolves to the function that lets it go (synchronous, so a
 * client started right after `stop()` finds the directory free). Rejects with `storeLocked`
 * while a live client holds it.
 * @param {string} directory
 * @returns {Promise<() => void>}
 */
export async function lockDirectory(directory) {
  const resolved = resolve(directory);
  const path = join(resolved, "lock");
  const text = JSON.stringify({ pid: process.pid, boot: BOOT });
  const mine = join(resolved, `lock.${process.pid}.${Math.random().toString(36).slice(2)}`);
  const refused = (/** @type {number | undefined} */ pid) =>
    new VdevError(
      "storeLocked",
      `the outbox directory ${directory} is in use` +
        (pid === undefined ? "" : ` by process ${pid}`) +
        (pid === process.pid ? " (this one: another client of it is running)" : "") +
        "; one client at a time can drive a device",
    );
  if (held.has(resolved)) throw refused(process.pid);
  await writeFile(mine, text, { flush: true });
  try {
    for (let attempt = 0; attempt < 5; attempt++) {
      try {
        await link(mine, path);
        held.add(resolved);
        return () => {
          held.delete(resolved);
          try {
            // Only our own lock goes.
            if (readFileSync(path, "utf8") === text) unlinkSync(path);
          } catch {}
        };
      } catch (error) {
        if (/** @type {NodeJS.ErrnoException} */ (error).code !== "EEXIST") throw error;
      }
      const stale = await readFile(path, "utf8").catch(() => undefined);
      if (stale === undefined) continue; // gone meanwhile: try again
      const pid = holder(stale, resolved);
      if (pid !== undefined) throw refused(pid);
      // Stale: moved aside, by one taker only; a lock that is not the one judged stale (a
      // quicker taker's) goes back.
      const aside = `${mine}.stale`;
      if (!(await rename(path, aside).then(() => true, () => false))) continue;
      const moved = await readFile(aside, "utf8").catch(() => undefined);
      if (moved !== stale) {
        await link(aside, path).catch(() => {});
        await unlink(aside).catch(() => {});
        throw refused(moved === undefined ? undefined : holder(moved, resolved));
      }
      await unlink(aside).catch(() => {});
    }
    throw new VdevError("storeLocked", `the outbox directory ${directory} could not be locked: its lock keeps changing hands`);
  } finally {
    await unlink(mine).catch(() => {});
  }
}
