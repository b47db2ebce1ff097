// De-duplication of handled messages by their deterministic ids (command_id, ...).

/** Where a subscriber records the ids it handled, per subscriber (`scope`). */
export interface HandledIds {
  /** Run `effect` unless `id` was handled; record `id` once `effect` resolved (a rejected
   * effect records nothing, so the id can be handled again). Resolves to whether it ran.
   * A store on a database records the id in the effect's own transaction. */
  once(scope: string, id: string, effect: () => Promise<void>): Promise<boolean>;
}

/** Handled ids in memory, for the process's lifetime: absorbs redeliveries in a process,
 * not across restarts. */
export class MemoryHandledIds implements HandledIds {
  private readonly handled = new Set<string>();

  async once(scope: string, id: string, effect: () => Promise<void>): Promise<boolean> {
    const key = `${scope}\u0000${id.toLowerCase()}`;
    if (this.handled.has(key)) return false;
    await effect();
    this.handled.add(key);
    return true;
  }

  get size(): number { return this.handled.size; }
}
