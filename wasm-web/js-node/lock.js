// One process per outbox directory: a `lock` file holding the pid of the process that drives
// the device. It is made whole or not at all (written under a name of its own, then linked to
// `lock`, which fails when one exists), so a reader never sees it half written. A lock whose
// process is gone (killed, the machine restarted) is stale: it is moved aside by a rename, which
// only one of two racing takers can do, and taken. A second client in the same process finds
// its own pid, alive, and is refused like another process.

import { unlinkSync } from "node:fs";
import { link, readFile, rename, unlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { VdevError } from "./errors.js";

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
 * Takes the lock of `directory`; resolves to the function that lets it go (synchronous, so a
 * client started right after `stop()` finds the directory free). Rejects with `storeLocked`
 * while a live process holds it.
 * @param {string} directory
 * @returns {Promise<() => void>}
 */
export async function lockDirectory(directory) {
  const path = join(directory, "lock");
  const mine = join(directory, `lock.${process.pid}.${Math.random().toString(36).slice(2)}`);
  await writeFile(mine, `${process.pid}\n`, { flush: true });
  try {
    for (let attempt = 0; attempt < 5; attempt++) {
      try {
        await link(mine, path);
        return () => {
          try {
            unlinkSync(path);
          } catch {}
        };
      } catch (error) {
        if (/** @type {NodeJS.ErrnoException} */ (error).code !== "EEXIST") throw error;
      }
      const holder = Number.parseInt(await readFile(path, "utf8").catch(() => ""), 10);
      if (Number.isSafeInteger(holder) && holder > 0 && alive(holder)) {
        throw new VdevError(
          "storeLocked",
          `the outbox directory ${directory} is in use by process ${holder}` +
            (holder === process.pid ? " (this one: another client of it is running)" : "") +
            "; one client at a time can drive a device",
        );
      }
      // Stale: moved aside (by one taker only) and removed; then try again.
      const aside = `${mine}.stale`;
      if (await rename(path, aside).then(() => true, () => false)) await unlink(aside).catch(() => {});
    }
    throw new VdevError("storeLocked", `the outbox directory ${directory} could not be locked: its lock keeps changing hands`);
  } finally {
    await unlink(mine).catch(() => {});
  }
}
