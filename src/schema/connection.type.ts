import { Field, Int, ObjectType, type ClassType } from 'type-graphql';

@ObjectType('PageInfo')
export class PageInfo {
  @Field(() => Boolean)
  hasNextPage: boolean;

  @Field(() => String, { nullable: true })
  endCursor: string | null;
}

export interface Edge<T> {
  cursor: string;
  node: T;
}

export interface ConnectionShape<T> {
  edges: Edge<T>[];
  nodes: T[];
  pageInfo: PageInfo;
  totalCount?: number;
}

/** Relay connection types named after the node: `${name}Edge` and `${name}Connection`. */
export function connectionTypes<T extends object>(name: string, node: ClassType<T>, withTotalCount: boolean) {
  @ObjectType(`${name}Edge`)
  class EdgeType {
    @Field(() => String)
    cursor: string;

    @Field(() => node)
    node: T;
  }

  class ConnectionType {
    @Field(() => [EdgeType])
    edges: EdgeType[];

    @Field(() => [node])
    nodes: T[];

    @Field(() => PageInfo)
    pageInfo: PageInfo;

    totalCount?: number;
  }
  if (withTotalCount) Field(() => Int)(ConnectionType.prototype, 'totalCount');
  ObjectType(`${name}Connection`)(ConnectionType);
  return ConnectionType;
}

/** Builds a connection from one page of rows (fetched with one extra to know if more follow). */
export function toConnection<T>(
  rows: T[],
  hasNextPage: boolean,
  cursorOf: (row: T) => string,
  totalCount?: number,
): ConnectionShape<T> {
  const edges = rows.map((node) => ({ cursor: cursorOf(node), node }));
  return {
    edges,
    nodes: rows,
    pageInfo: { hasNextPage, endCursor: edges.length > 0 ? edges[edges.length - 1]!.cursor : null },
    totalCount,
  };
}
