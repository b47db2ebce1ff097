export { MemoryHandledIds, type HandledIds } from "./dedup.js";
export { InvalidEventError } from "./errors.js";
export type { PhaseEvent, RollbackCommand } from "./generated/contract.js";
export { PHASE_EVENTS_TOPIC, ROLLBACK_COMMANDS_TOPIC } from "./kafka.js";
export {
  newEvent, PhaseEventPublisher, type PhaseOptions, type PhaseRun, type PhaseStatus,
  type Published, type PublisherOptions,
} from "./publisher.js";
export {
  CommandSubscriber, type CommandDelivery, type CommandHandler, type CommandSubscriberOptions,
  type SubscriberStats,
} from "./subscriber.js";
export {
  checkCommand, checkEvent, decodeCommand, decodeEvent, decodeRecord, DEFAULT_MAX_EVENT_BYTES,
} from "./validate.js";
