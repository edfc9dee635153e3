// The error of every refused or failed call of the API: one class with a stable `code`, so an
// app matches on `error.code` instead of on the wording of `error.message`.

/** @import { VdevErrorCode } from "./vdev_web.js" */

export class VdevError extends Error {
  /**
   * @param {VdevErrorCode} code
   * @param {string} message
   */
  constructor(code, message) {
    super(message);
    this.name = "VdevError";
    /** @type {VdevErrorCode} */
    this.code = code;
  }
}
