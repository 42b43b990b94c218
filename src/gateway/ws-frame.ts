import { Slab } from '../common/slab';

/**
 * A WebSocket text frame as the server sends it (RFC 6455 §5.2: FIN + opcode 1, no mask, the payload length in 7,
 * 7+16 or 7+64 bits), built once for a frame that goes to many sockets.
 *
 * `ws.send()` frames every payload again for every socket: a header Buffer, an options object and a two-buffer
 * `writev` per subscriber. The hub writes one prepared payload to every subscriber of a channel in a row, so the
 * last framing is kept: all subscribers but the first get the same bytes without any work or allocation, and each
 * costs one `socket.write` of one Buffer.
 */
let lastPayload: Buffer | undefined;
let lastFrame: Buffer | undefined;

/**
 * Framed copies live only until the sockets have written them, unlike the payloads the history keeps: they get
 * their own slabs, so none sits between kept frames and stays pinned with them.
 */
const slab = new Slab(64 * 1024, 16 * 1024);

export function textFrame(payload: Buffer): Buffer {
  if (payload === lastPayload && lastFrame !== undefined) return lastFrame;
  const length = payload.length;
  const headerLength = length < 126 ? 2 : length <= 0xffff ? 4 : 10;
  const frame = slab.alloc(headerLength + length);
  frame[0] = 0x81;
  if (length < 126) frame[1] = length;
  else if (length <= 0xffff) {
    frame[1] = 126;
    frame.writeUInt16BE(length, 2);
  } else {
    frame[1] = 127;
    frame.writeUInt32BE(Math.floor(length / 2 ** 32), 2);
    frame.writeUInt32BE(length >>> 0, 6);
  }
  payload.copy(frame, headerLength);
  lastPayload = payload;
  lastFrame = frame;
  return frame;
}
