import { z } from 'zod';
import { CHANNEL_PATTERN } from '../hub/hub-event';

const Event = z.looseObject({ type: z.string().min(1).max(100) });

const Item = z.object({
  channel: z.string().regex(CHANNEL_PATTERN, 'must be execution.{id}, pipeline.{id}, project.{id}, user.{id}, monitor or system'),
  event: Event,
  message_id: z.string().min(1).max(200).optional(),
});

/** Body of `POST /api/v1/publish`: one item or a list of them (parsed separately so errors name the field). */
export const PublishBody = {
  safeParse(body: unknown): ReturnType<typeof ItemList.safeParse> {
    return Array.isArray(body) ? ItemList.safeParse(body) : ItemList.safeParse([body]);
  },
};
const ItemList = z.array(Item).min(1, 'at least one event');
export type PublishItem = z.infer<typeof Item>;
