import { brokerNodeOf } from './broker-node';

describe('brokerNodeOf', () => {
  it('keeps host and port and drops the credentials and the vhost', () => {
    expect(brokerNodeOf('amqp://user:s3cret@rabbit-2.internal:5701/%2Fansflow?heartbeat=5')).toBe('rabbit-2.internal:5701');
  });

  it('fills in the default port of the scheme', () => {
    expect(brokerNodeOf('amqp://guest:guest@10.0.0.3')).toBe('10.0.0.3:5672');
    expect(brokerNodeOf('amqps://u:p@rabbit.example')).toBe('rabbit.example:5671');
  });

  it('says unknown rather than echo an unparseable address (it could hold a password)', () => {
    expect(brokerNodeOf('amqp://user:pa ss@@')).toBe('unknown');
  });
});
