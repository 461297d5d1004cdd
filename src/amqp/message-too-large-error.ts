// Moved to the messaging core, where the memory broker refuses the same sizes; kept here for imports of it.
export { isMessageTooLargeError, MessageTooLargeError } from '../messaging/errors.js';
